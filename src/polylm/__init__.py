"""polylm: the PolyLM polyglot LLM (arXiv 2307.06018) as one Python package."""

from polylm.checkpoint import load_model, save_model
from polylm.config import PRESETS, ModelConfig, preset
from polylm.errors import PolyLMError
from polylm.generate import GenerationConfig, TextGenerator, generate
from polylm.model import KVCache, PolyLM, build_model, count_parameters
from polylm.pipelines import pipeline
from polylm.tokenizer import Tokenizer

__version__ = "0.1.0"
__all__ = [
    "PRESETS",
    "GenerationConfig",
    "KVCache",
    "ModelConfig",
    "PolyLM",
    "PolyLMError",
    "TextGenerator",
    "Tokenizer",
    "build_model",
    "count_parameters",
    "generate",
    "load_model",
    "pipeline",
    "preset",
    "save_model",
]
