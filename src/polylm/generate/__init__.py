"""Decoding: greedy, sampling and beam search over the KV cache, token for token like transformers.

`generate` works on token ids; `TextGenerator` adds the tokenizer, prompt templates, stop strings
and streaming. The names load on first use, so that `polylm.generate.config` (what the CLI builds its flags
from) imports without torch.
"""

from __future__ import annotations

from polylm import lazy

_HOMES = {
    "Generation": "polylm.generate.batch",
    "GenerationConfig": "polylm.generate.config",
    "generate": "polylm.generate.decode",
    "TextGeneration": "polylm.generate.text",
    "TextGenerator": "polylm.generate.text",
}
__all__ = sorted(_HOMES)

__getattr__ = lazy.exports(__name__, _HOMES)
