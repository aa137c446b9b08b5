"""One conversation record for every instruction set: `{messages: [{role, content}], lang, source}`.

Loaders turn each public format into this; the mixture writes it as JSONL; SFT renders it with a template.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

ROLES = ("system", "user", "assistant")
SURROGATE = re.compile("[\ud800-\udfff]")
"""A lone surrogate: what a JSON escape (`\\ud800`) can put in a str and no UTF-8 text can hold."""


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class Conversation:
    messages: tuple[Message, ...]
    lang: str
    """ISO 639-1 code ("und" when unknown)."""
    source: str
    """The instruction set it came from, e.g. `multialpaca`, `dolly`."""

    def to_dict(self) -> dict:
        return {**asdict(self), "messages": [asdict(m) for m in self.messages]}

    @classmethod
    def from_dict(cls, data: dict) -> Conversation:
        """The inverse of `to_dict`; KeyError, TypeError or ValueError for a record of any other shape."""
        conversation = cls(
            tuple(Message(m["role"], m["content"]) for m in data["messages"]), data["lang"], data["source"]
        )
        roles_and_contents = (text for message in conversation.messages for text in (message.role, message.content))
        texts = [conversation.lang, conversation.source, *roles_and_contents]
        if not all(isinstance(text, str) for text in texts):
            raise TypeError("roles, contents, lang and source must be strings")
        if any(SURROGATE.search(text) for text in texts):
            raise ValueError("a string holds a lone surrogate, which is not valid UTF-8")
        return conversation


def problem(conversation: Conversation) -> str | None:
    """Why a conversation cannot be trained on (None when it can).

    Roles must be known; system messages may only open it; user and assistant must alternate, starting with the
    user and ending with the assistant; no message may be empty (an empty response would teach the model to stop).
    """
    messages = list(conversation.messages)
    if messages and messages[0].role == "system":
        messages = messages[1:]
    for index, message in enumerate(messages):
        if message.role not in ROLES:
            return f"unknown role {message.role!r}"
        if not message.content.strip():
            return f"empty {message.role} message"
        expected = "user" if index % 2 == 0 else "assistant"
        if message.role != expected:
            return f"message {index}: expected {expected}, got {message.role}"
    if not messages or messages[-1].role != "assistant":
        return "no assistant response at the end"
    return None
