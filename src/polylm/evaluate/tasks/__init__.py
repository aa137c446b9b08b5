"""The benchmarks `polylm evaluate --tasks` knows, by name, and the groups that expand to several."""

from __future__ import annotations

from polylm.errors import PolyLMError
from polylm.evaluate.tasks.base import ChoiceDoc, ChoiceTask, GenerationDoc, GenerationTask, Split, Task
from polylm.evaluate.tasks.mtg import INSTRUCTIONS, MTGTask
from polylm.evaluate.tasks.pawsx import PAWSX
from polylm.evaluate.tasks.qa import TyDiQA, XQuAD
from polylm.evaluate.tasks.translation import FLORES, WMT20
from polylm.evaluate.tasks.xcopa import XCOPA
from polylm.evaluate.tasks.xnli import XNLI
from polylm.evaluate.tasks.xwinograd import XWinograd

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        XNLI(),
        XCOPA(),
        PAWSX(),
        XWinograd(),
        TyDiQA(),
        XQuAD(),
        *(MTGTask(subtask) for subtask in INSTRUCTIONS),
        WMT20(),
        FLORES(),
    )
}
GROUPS = {"mtg": [f"mtg_{subtask}" for subtask in INSTRUCTIONS]}


def resolve_tasks(names: list[str]) -> list[Task]:
    """Tasks in the order given, groups expanded, each once; an unknown name lists the known ones."""
    resolved: list[str] = []
    for name in names:
        if name in GROUPS:
            resolved += GROUPS[name]
        elif name in TASKS:
            resolved.append(name)
        else:
            known = ", ".join([*TASKS, *GROUPS])
            raise PolyLMError(f"unknown task {name!r} in --tasks; known tasks: {known}")
    return [TASKS[name] for name in dict.fromkeys(resolved)]


__all__ = [
    "GROUPS",
    "TASKS",
    "ChoiceDoc",
    "ChoiceTask",
    "GenerationDoc",
    "GenerationTask",
    "Split",
    "Task",
    "resolve_tasks",
]
