"""Prompts in Alpaca's numbered format, written in the target language.

Each task is a block `N. Instruction: …` / `N. Input:` (the input on the next line, `<noinput>` when empty) /
`N. Output:` (the output on the next line); blocks are separated by `###` lines. The generation prompt lists
k demonstrations, numbered 1..k, and ends with `k+1. Instruction:` so that the model continues the list; the
translation prompt shows one English task and ends with the start of the translated block.
"""

from __future__ import annotations

from polylm.selfinstruct.locales import Locale
from polylm.selfinstruct.task import Task

NO_INPUT = "<noinput>"
SEPARATOR = "###"


def format_task(index: int, task: Task) -> str:
    """One numbered block (instruction on one line; input and output on the lines after their labels)."""
    instruction = " ".join(task.instruction.split()).rstrip(":")
    return (
        f"{index}. Instruction: {instruction}\n"
        f"{index}. Input:\n{task.input or NO_INPUT}\n"
        f"{index}. Output:\n{task.output}\n"
    )


def generation_prompt(locale: Locale, demos: list[Task], new: int) -> str:
    """Ask for `new` tasks after the demonstrations: the list is announced as len(demos) + new long."""
    total = len(demos) + new
    rules = "\n".join(f"{i}. {rule}" for i, rule in enumerate(locale.rules, 1))
    blocks = "".join(f"{SEPARATOR}\n{format_task(i, task)}" for i, task in enumerate(demos, 1))
    return (
        f"{locale.intro.format(n=total)}\n\n{locale.requirements}\n{rules}\n\n{locale.list_header.format(n=total)}\n"
        f"{blocks}{SEPARATOR}\n{len(demos) + 1}. Instruction:"
    )


def translation_prompt(locale: Locale, task: Task) -> str:
    """Ask for the task in the target language, in the same block format (parsed as task number 1)."""
    return (
        f"Translate this task from English into {locale.name}: the instruction, the input and the output. Keep "
        f"names, numbers and code unchanged, keep {NO_INPUT} as it is, and answer in the same format.\n\n"
        f"{SEPARATOR}\n{format_task(1, task)}{SEPARATOR}\n\n{locale.name} translation:\n{SEPARATOR}\n1. Instruction:"
    )
