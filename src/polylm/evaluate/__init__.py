"""Evaluation on PolyLM's multilingual benchmarks, scored like lm-evaluation-harness and WMT score them.

`evaluate(EvalConfig(...))` returns the output document; `write_outputs` writes it as JSON, a markdown table
and bar charts. The pieces: tasks/ (one loader per benchmark), prompts (localized words), instances (the requests,
carried with their task, language and document), language_model (the model side: log-likelihoods and
generation), metrics, report. See docs/evaluation.md.
"""

from polylm.evaluate.report import write_outputs
from polylm.evaluate.runner import EvalConfig, evaluate

__all__ = ["EvalConfig", "evaluate", "write_outputs"]
