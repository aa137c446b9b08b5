"""PolyLM's prompt formats, one definition for inference (B, G) and instruction tuning (F).

Sources (`../shared/spec/polylm-facts.md` §4): the official CLI demo and README.
- `multialpaca`: runs of newlines in a query collapse to one, then `"{query}\\n\\n"`; multi-round history is
  `"{q1}\\n\\n{r1}\\n{q2}\\n\\n"` [verified].
- `chat`: `"<|user|>\\n{query}\\n<|assistant|>\\n"` [verified single turn]; earlier turns repeat the tags with
  `"{response}\\n"` after each reply [UNVERIFIED default]. The tags are plain text, not special tokens.
- `plain`: the text as is (base models; history is concatenated without separators).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from polylm.errors import PolyLMError

Turn = tuple[str, str]  # (query, response)


def _plain(query: str, history: Sequence[Turn]) -> str:
    return "".join(q + r for q, r in history) + query


def _collapse_newlines(text: str) -> str:
    return re.sub("\n+", "\n", text)


def _multialpaca(query: str, history: Sequence[Turn]) -> str:
    past = "".join(f"{_collapse_newlines(q)}\n\n{r}\n" for q, r in history)
    return f"{past}{_collapse_newlines(query)}\n\n"


def _chat(query: str, history: Sequence[Turn]) -> str:
    past = "".join(f"<|user|>\n{q}\n<|assistant|>\n{r}\n" for q, r in history)
    return f"{past}<|user|>\n{query}\n<|assistant|>\n"


TEMPLATES: dict[str, Callable[[str, Sequence[Turn]], str]] = {
    "plain": _plain,
    "multialpaca": _multialpaca,
    "chat": _chat,
}


def render_prompt(template: str, query: str, history: Sequence[Turn] = ()) -> str:
    """The model input for `query` after the earlier `history` turns, in `template`'s format."""
    if template not in TEMPLATES:
        raise PolyLMError(f"unknown template {template!r} (--template); choose one of {', '.join(TEMPLATES)}")
    return TEMPLATES[template](query, history)


def render_messages(template: str, messages: Sequence[tuple[str, str]]) -> str:
    """An OpenAI-style conversation, (role, content) pairs ending with the user's turn, in `template`'s format.

    PolyLM has no system prompt: system (and developer) messages are joined and put, with a newline, before the
    first user query [polylm's convention]. Consecutive user messages are joined with a newline; every assistant
    message closes the turn before it.
    """
    system: list[str] = []
    turns: list[Turn] = []
    query: list[str] = []
    for index, (role, content) in enumerate(messages):
        if role in ("system", "developer"):
            system.append(content)
        elif role == "user":
            query.append(content)
        elif role == "assistant":
            if not query:
                raise PolyLMError(f"message {index} (assistant) does not follow a user message")
            turns.append(("\n".join(query), content))
            query = []
        else:
            raise PolyLMError(f"message {index} has unknown role {role!r}; use system, user or assistant")
    if not query:
        raise PolyLMError("the conversation must end with a user message")
    if system:
        first = turns[0][0] if turns else query[0]
        first = "\n".join(system) + "\n" + first
        if turns:
            turns[0] = (first, turns[0][1])
        else:
            query[0] = first
    return render_prompt(template, "\n".join(query), turns)


# The same formats as Jinja chat templates, for runtimes that format conversations themselves (llama.cpp's server,
# llama-cpp-python, Ollama and LM Studio read `tokenizer.chat_template` from a GGUF). Each renders an OpenAI-style
# `messages` list exactly as `render_messages` does; a conversation ending with an assistant message renders its
# turns only. Written with what both Python's jinja2 and llama.cpp's own Jinja engine understand: namespaces,
# string methods, raise_exception; no regex, so the newline collapsing of `multialpaca` halves runs of newlines
# 32 times (enough for runs shorter than 2**32).
_JINJA_PREAMBLE = (
    "{%- set system = namespace(text=none) -%}"
    "{%- for m in messages -%}{%- if m['role'] in ['system', 'developer'] -%}"
    "{%- if system.text is none -%}{%- set system.text = m['content'] -%}"
    "{%- else -%}{%- set system.text = system.text + '\\n' + m['content'] -%}{%- endif -%}"
    "{%- endif -%}{%- endfor -%}"
    "{%- set state = namespace(query=none, first=true) -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'user' -%}"
    "{%- if state.query is none -%}"
    "{%- if state.first and system.text is not none -%}{%- set state.query = system.text + '\\n' + m['content'] -%}"
    "{%- else -%}{%- set state.query = m['content'] -%}{%- endif -%}"
    "{%- set state.first = false -%}"
    "{%- else -%}{%- set state.query = state.query + '\\n' + m['content'] -%}{%- endif -%}"
    "{%- elif m['role'] == 'assistant' -%}"
    "{%- if state.query is none -%}{{ raise_exception('an assistant message must follow a user message') }}"
    "{%- endif -%}"
    "{%- set query = state.query -%}{%- set response = m['content'] -%}"
)
_JINJA_MIDDLE = (
    "{%- set state.query = none -%}"
    "{%- elif m['role'] not in ['system', 'developer'] -%}"
    "{{ raise_exception('unknown role ' + m['role'] + '; use system, user or assistant') }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if state.query is not none -%}{%- set query = state.query -%}"
)
_JINJA_END = "{%- endif -%}"
_COLLAPSE = (
    "{%- set collapsed = namespace(text=query) -%}"
    "{%- for _ in range(32) -%}{%- set collapsed.text = collapsed.text.replace('\\n\\n', '\\n') -%}{%- endfor -%}"
)
_JINJA_TURNS = {
    "plain": ("{{ query }}{{ response }}", "{{ query }}"),
    "multialpaca": (
        _COLLAPSE + "{{ collapsed.text }}{{ '\\n\\n' }}{{ response }}{{ '\\n' }}",
        _COLLAPSE + "{{ collapsed.text }}{{ '\\n\\n' }}",
    ),
    "chat": (
        "{{ '<|user|>\\n' }}{{ query }}{{ '\\n<|assistant|>\\n' }}{{ response }}{{ '\\n' }}",
        "{{ '<|user|>\\n' }}{{ query }}{{ '\\n<|assistant|>\\n' }}",
    ),
}


def jinja_template(template: str) -> str:
    """`template` as a Jinja chat template over OpenAI-style messages, equal to `render_messages(template, ...)`."""
    if template not in _JINJA_TURNS:
        raise PolyLMError(f"unknown template {template!r} (--template); choose one of {', '.join(TEMPLATES)}")
    turn, final = _JINJA_TURNS[template]
    return _JINJA_PREAMBLE + turn + _JINJA_MIDDLE + final + _JINJA_END
