"""Evaluation requests as records (lm-evaluation-harness's `Instance`): each carries the task, language, document
and choice it belongs to through batching, and gets its answer written into it, so scoring never depends on the
order in which answers come back."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Instance:
    kind: str
    """`loglikelihood` (score `continuation` after `context`) or `generate_until` (answer `context`)."""
    task: str
    lang: str
    doc: int
    """The document's index in its task and language."""
    choice: int
    """The continuation's index among the document's choices (0 for generation)."""
    context: str
    continuation: str = ""
    result: float | str | None = None
    """The log-likelihood, or the generated answer; None until the model has answered."""

    @property
    def pair(self) -> tuple[str, str]:
        return self.context, self.continuation


def answer_in_order(instances: list[Instance], results: list) -> None:
    """Write each of `results` into the instance it answers (the model returns them in request order)."""
    if len(results) != len(instances):
        raise RuntimeError(f"{len(results)} answers for {len(instances)} requests")
    for instance, result in zip(instances, results, strict=True):
        instance.result = result
