"""Evaluation on PolyLM's multilingual benchmarks, scored like lm-evaluation-harness and WMT score them.

`evaluate(EvalConfig(...))` returns the output document; `write_outputs` writes it as JSON, a markdown table
and bar charts. The pieces: config (what to evaluate), tasks/ (one loader per benchmark), prompts (localized
words), instances (the requests, carried with their task, language and document), language_model (the model
side: log-likelihoods and generation), metrics, report. See docs/evaluation.md. The names load on first use, so
that the CLI reads `EvalConfig` without torch.
"""

from __future__ import annotations

from polylm import lazy

_HOMES = {
    "EvalConfig": "polylm.evaluate.config",
    "evaluate": "polylm.evaluate.runner",
    "write_outputs": "polylm.evaluate.report",
}
__all__ = sorted(_HOMES)

__getattr__ = lazy.exports(__name__, _HOMES)
