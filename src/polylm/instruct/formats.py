"""The public instruction sets' record formats, each turned into `Conversation`s (see docs/instruct.md).

A format reads one parsed JSON record at a time (`record`) and, for formats whose conversations span records
(Open Assistant's flat message table), gives the rest when the file ends (`end`). What it yields are `Entry`s:
a conversation, a malformed record (`malformed`: the reason, without the position, so that reasons can be
counted), or a well-formed record the format itself excludes (`rejected`: a deleted Open Assistant message).
Conversations come out as the set has them, valid or not: `records.problem` judges them later, so that an
unknown role or an empty response is counted with its reason like every other drop.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from polylm.instruct.records import SURROGATE, Conversation, Message

UNKNOWN_LANG = "und"
SHARE_GPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant",
                   "assistant": "assistant", "system": "system"}  # fmt: skip
"""ShareGPT `from` values; others (`bing`, `bard`, ...) stay as they are, so `problem` rejects them by name."""
OASST_ROLES = {"prompter": "user", "assistant": "assistant"}
_LANG_TAG = re.compile(r"([a-z]{2})(?:[-_].*)?")


class Malformed(Exception):
    """A record without its format's shape; the message is the reason counted in the stats."""


@dataclass(frozen=True)
class Entry:
    where: str
    """`FILE:LINE` (JSONL) or `FILE[INDEX]` (JSON array), plus the message id for Open Assistant paths."""
    conversation: Conversation | None = None
    malformed: str | None = None
    rejected: str | None = None


def _string(record: dict, key: str, optional: bool = False) -> str:
    """`record[key]` as a string; an optional field may be absent or null (then empty)."""
    value = record.get(key)
    if value is None:
        if optional:
            return ""
        raise Malformed(f"missing field {key!r}" if key not in record else f"field {key!r} is null")
    if not isinstance(value, str):
        raise Malformed(f"field {key!r} is {type(value).__name__}, expected a string")
    if SURROGATE.search(value):
        raise Malformed(f"field {key!r} holds a lone surrogate, not valid UTF-8")
    return value


def _object(value: object, what: str) -> dict:
    if not isinstance(value, dict):
        raise Malformed(f"{what} is {type(value).__name__}, expected an object")
    return value


def lang_code(tag: object) -> str:
    """ISO 639-1 from a record's language tag (`pt-BR` -> `pt`); `und` when there is none."""
    match = _LANG_TAG.fullmatch(tag.lower()) if isinstance(tag, str) else None
    return match.group(1) if match else UNKNOWN_LANG


def single_turn(instruction: str, extra: str, response: str) -> Conversation:
    """One user turn (`instruction`, then `extra` on the next line when it is not blank) and one response."""
    query = f"{instruction}\n{extra}" if extra.strip() else instruction
    return Conversation((Message("user", query), Message("assistant", response)), UNKNOWN_LANG, "")


def alpaca(record: dict) -> Conversation:
    """Alpaca, Code Alpaca, GPT-4-LLM (en, zh), MultiAlpaca: `instruction`, `input` (may be null or absent),
    `output`."""
    return single_turn(_string(record, "instruction"), _string(record, "input", True), _string(record, "output"))


def dolly(record: dict) -> Conversation:
    """databricks-dolly-15k: `instruction`, `context` (may be empty), `response`; `category` is not used."""
    return single_turn(_string(record, "instruction"), _string(record, "context", True), _string(record, "response"))


def gpteacher(record: dict) -> Conversation:
    """GPTeacher (General-Instruct, Codegen, ...): `instruction`, `input` (may be empty), `response`."""
    return single_turn(_string(record, "instruction"), _string(record, "input", True), _string(record, "response"))


def flan_v2(record: dict) -> Conversation:
    """FLAN v2 collection dumps: `inputs` (the filled-in template) and `targets`; other fields are not used."""
    return single_turn(_string(record, "inputs"), "", _string(record, "targets"))


def share_gpt(record: dict) -> Conversation:
    """ShareGPT: `{"id", "conversations": [{"from": "human"|"gpt"|"system", "value"}]}`."""
    turns = record.get("conversations")
    if not isinstance(turns, list):
        raise Malformed("missing field 'conversations'" if turns is None else "field 'conversations' is not a list")
    messages = []
    for turn in turns:
        turn = _object(turn, "a turn")
        role = _string(turn, "from")
        messages.append(Message(SHARE_GPT_ROLES.get(role, role), _string(turn, "value")))
    return Conversation(tuple(messages), UNKNOWN_LANG, "")


class SingleRecord:
    """A format whose every record is one conversation."""

    def __init__(self, convert: Callable[[dict], Conversation]) -> None:
        self.convert = convert

    def record(self, record: dict, where: str) -> Iterator[Entry]:
        try:
            yield Entry(where, self.convert(record))
        except Malformed as exc:
            yield Entry(where, malformed=str(exc))

    def end(self) -> Iterator[Entry]:
        return iter(())


@dataclass
class _Node:
    message: dict
    where: str
    replies: list[_Node] = field(default_factory=list)


class OpenAssistant:
    """oasst1/oasst2 exports, either kind per record: a message tree (`*.trees.jsonl`: `{"message_tree_id",
    "prompt": {"message_id", "text", "role": "prompter", "lang", "replies": [...]}}`) or a message of the flat
    table (`*.messages.jsonl`, HF parquet exported as JSONL: `message_id`, `parent_id` (null at the root),
    `role`, `text`, `lang`), whose trees are built when the file ends.

    Each tree gives one conversation per assistant message with no assistant message below it: the path from
    the root to it (a root-to-leaf path cut after its last answer; an unanswered follow-up prompt is left out).
    A message marked `deleted` or with `review_result` false is rejected with its replies (one count). The
    language is the root prompt's `lang`. In the flat table, a message whose parent is not in the file, or whose
    `parent_id`s run in a loop that never reaches a root, is malformed, with its replies.
    """

    def __init__(self) -> None:
        self.table: list[_Node] = []

    def record(self, record: dict, where: str) -> Iterator[Entry]:
        if "prompt" not in record:
            try:
                for key in ("message_id", "role", "text"):
                    _string(record, key)
                _string(record, "parent_id", optional=True)
            except Malformed as exc:
                yield Entry(where, malformed=str(exc))
                return
            self.table.append(_Node(record, where))
            return
        try:
            root = _tree(record["prompt"], where)
        except Malformed as exc:
            yield Entry(where, malformed=str(exc))
            return
        yield from _conversations(root, lang_code(root.message.get("lang")))

    def end(self) -> Iterator[Entry]:
        """The flat table's trees; a message whose parent is not in the file, or that has no root above it (its
        parent_ids loop), is malformed, with its replies."""
        nodes = {node.message["message_id"]: node for node in self.table}
        roots = []
        for node in self.table:
            parent = node.message.get("parent_id")
            if parent is None:
                roots.append(node)
            elif parent in nodes:
                nodes[parent].replies.append(node)
        reached: set[int] = set()
        for node in self.table:
            parent = node.message.get("parent_id")
            if parent is not None and parent not in nodes:
                orphans = list(_subtree(node))
                reached.update(map(id, orphans))
                yield from (Entry(n.where, malformed="parent message not in the file") for n in orphans)
        for root in roots:
            reached.update(map(id, _subtree(root)))
            yield from _conversations(root, lang_code(root.message.get("lang")))
        for node in self.table:
            if id(node) not in reached:  # parent_ids in a loop (a message its own ancestor): no root above it
                yield Entry(node.where, malformed="parent_id loop: no root message above it")
        self.table = []


def _tree(message: object, where: str) -> _Node:
    """A nested export message and its replies, checked all the way down (one bad message spoils the tree), in
    depth-first order with a stack rather than recursion, like `_walk`."""
    root = _Node(message, where)  # its message is checked first, like every reply
    stack = [root]
    while stack:
        node = stack.pop()
        node.message = _object(node.message, "a message")
        for key in ("role", "text"):
            _string(node.message, key)
        replies = node.message.get("replies") or []
        if not isinstance(replies, list):
            raise Malformed("field 'replies' is not a list")
        node.where = f"{where} message {node.message.get('message_id', '?')}"
        node.replies = [_Node(reply, where) for reply in replies]
        stack.extend(reversed(node.replies))
    return root


def _subtree(node: _Node) -> Iterator[_Node]:
    """`node` and the messages below it, depth first (a stack, not recursion: a reply chain can be thousands
    of messages deep in a flat table)."""
    stack = [node]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.replies))


def _conversations(root: _Node, lang: str) -> Iterator[Entry]:
    """Depth first; see `OpenAssistant`. A tree without any answer gives its root prompt alone, so that it is
    counted (`problem` rejects it: no assistant response)."""
    entries = _walk(root, lang)
    yield from entries or [Entry(root.where, Conversation((_message(root),), lang, ""))]


@dataclass
class _Visit:
    node: _Node
    message: Message
    replies_done: int = 0
    answered: bool = False
    """Whether a conversation below it ends with an assistant message."""


def _walk(root: _Node, lang: str) -> list[Entry]:
    """The conversations below `root`: each assistant message with no answered reply below it closes one; an
    excluded message is rejected with its replies. An explicit stack, so that no chain is too deep."""
    entries: list[Entry] = []
    stack: list[_Visit] = []

    def enter(node: _Node) -> None:
        message = _message(node)
        if not _excluded(node.message):
            stack.append(_Visit(node, message))
            return
        path = (*(visit.message for visit in stack), message)
        entries.append(Entry(node.where, Conversation(path, lang, ""), rejected="deleted or failed review"))

    enter(root)
    while stack:
        visit = stack[-1]
        if visit.replies_done < len(visit.node.replies):
            visit.replies_done += 1
            enter(visit.node.replies[visit.replies_done - 1])
            continue
        if not visit.answered and visit.message.role == "assistant":
            entries.append(Entry(visit.node.where, Conversation(tuple(v.message for v in stack), lang, "")))
            visit.answered = True
        stack.pop()
        if stack:
            stack[-1].answered |= visit.answered
    return entries


def _excluded(message: dict) -> bool:
    return message.get("deleted") is True or message.get("review_result") is False


def _message(node: _Node) -> Message:
    role = node.message["role"]
    return Message(OASST_ROLES.get(role, role), node.message["text"])


FORMATS: dict[str, Callable[[], SingleRecord | OpenAssistant]] = {
    "alpaca": lambda: SingleRecord(alpaca),
    "dolly": lambda: SingleRecord(dolly),
    "flan_v2": lambda: SingleRecord(flan_v2),
    "gpteacher": lambda: SingleRecord(gpteacher),
    "share_gpt": lambda: SingleRecord(share_gpt),
    "open_assistant": OpenAssistant,
}
"""Format name (the mixture config's `format`) -> a fresh reader for one file."""
