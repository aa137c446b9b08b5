"""polylm: the PolyLM polyglot LLM (arXiv 2307.06018) as one Python package.

Names are imported on first use (PEP 562), so `import polylm` stays cheap: tokenizer worker processes and
data-only commands do not pay for importing torch. The decoding function is `polylm.generate.generate`
(`polylm.generate` is its package).
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "GenerationConfig": "polylm.generate",
    "KVCache": "polylm.model",
    "ModelConfig": "polylm.config",
    "PRESETS": "polylm.config",
    "PolyLM": "polylm.model",
    "PolyLMError": "polylm.errors",
    "TextGenerator": "polylm.generate",
    "Tokenizer": "polylm.tokenizer",
    "build_model": "polylm.model",
    "count_parameters": "polylm.model",
    "load_model": "polylm.hf_checkpoint",
    "pipeline": "polylm.pipelines",
    "preset": "polylm.config",
    "save_model": "polylm.hf_checkpoint",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'polylm' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
