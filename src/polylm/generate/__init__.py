"""Decoding: greedy, sampling and beam search over the KV cache, token for token like transformers.

`generate` works on token ids; `TextGenerator` adds the tokenizer, prompt templates, stop strings
and streaming.
"""

from polylm.generate.batch import Generation
from polylm.generate.config import GenerationConfig
from polylm.generate.decode import generate
from polylm.generate.text import TextGeneration, TextGenerator

__all__ = ["Generation", "GenerationConfig", "TextGeneration", "TextGenerator", "generate"]
