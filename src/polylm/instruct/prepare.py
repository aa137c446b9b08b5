"""`polylm instruct prepare`: the mixture's sources -> filtered conversations, split into train and validation.

Each record goes, in order: read (malformed ones counted with `FILE:LINE`) -> language (the file's or the
source's fixed `lang`, else the record's, else language ID, else `und`) -> `records.problem` (unknown role,
empty message, roles out of order, no final response) -> exact dedup -> token length -> the source's
`max_records` sample -> the validation split. Every record that does not reach OUT/train.jsonl or
OUT/validation.jsonl is counted by reason in OUT/stats.json, and listed with its `FILE:LINE` in
OUT/dropped.jsonl, except those the `max_records` sample leaves out (counted only: the rest of a 100k sample
of FLAN would be millions of lines).

Output directory:
    train.jsonl, validation.jsonl   `Conversation.to_dict()` lines, sources in config order, records in file order
    stats.json                      per source and language: read, kept, dropped by reason; malformed records
    dropped.jsonl                   {where, source, lang, reason} of every malformed or dropped record
    mixture.json                    the resolved config
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

from tqdm import tqdm

from polylm.configfile import read_json
from polylm.data.filters import LanguageFilter
from polylm.durable import write_json, written_whole
from polylm.errors import PolyLMError
from polylm.instruct.formats import UNKNOWN_LANG, Entry
from polylm.instruct.loaders import read_conversations, read_entries
from polylm.instruct.mixture import LengthConfig, MixtureConfig, SourceConfig
from polylm.instruct.records import Conversation, problem
from polylm.instruct.stats import Tally
from polylm.progress import progress_bar
from polylm.tokenizer import Tokenizer

LID_CHARS = 2000
"""Language ID reads the first this many characters of the joined messages (enough, and bounded)."""
DUPLICATE, SAMPLED_OUT = "duplicate", "over max_records"
_MESSAGE_INDEX = re.compile(r"^message \d+: ")


def conversation_key(conversation: Conversation) -> bytes:
    """128-bit hash of the roles and NFC contents with whitespace runs collapsed: the dedup key."""
    text = "\x1e".join(
        f"{m.role}\x1f{' '.join(unicodedata.normalize('NFC', m.content).split())}" for m in conversation.messages
    )
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def held_out(key: bytes, fraction: float) -> bool:
    """Whether the conversation of `key` goes to validation: a stable choice from its text alone."""
    return int.from_bytes(key[:8], "big") / 2**64 < fraction


class LengthFilter:
    """Token count of a conversation as training will see it (see LengthConfig.template)."""

    def __init__(self, config: LengthConfig) -> None:
        self.max_tokens = config.max_tokens
        self.template = config.template
        self.tokenizer = Tokenizer.from_dir(config.tokenizer)

    def count(self, conversation: Conversation) -> int:
        if self.template is not None:
            from polylm.instruct.sft import encode  # the trainer's own encoding; it imports torch

            return len(encode(self.tokenizer, self.template, conversation).ids)
        text = "\n".join(m.content for m in conversation.messages)
        return len(self.tokenizer.encode(text)) + sum(m.role == "assistant" for m in conversation.messages)

    def too_long(self, conversation: Conversation) -> bool:
        return self.count(conversation) > self.max_tokens


@dataclass
class _Run:
    """What every source shares: the filters, the dedup memory, the counts and the open dropped.jsonl."""

    config: MixtureConfig
    tally: Tally
    dropped: IO[str]
    strict: bool
    bar: tqdm
    length: LengthFilter | None
    lid: LanguageFilter | None
    seen: set[bytes]

    def drop(self, source: str, lang: str | None, reason: str, where: str) -> None:
        grouped = _MESSAGE_INDEX.sub("", reason)  # "message 3: expected user, got assistant" counts as one reason
        if lang is None:
            self.tally.malformed(source, grouped, where)
        else:
            self.tally.dropped(source, lang, grouped)
        record = {"where": where, "source": source, "lang": lang, "reason": reason}
        self.dropped.write(json.dumps(record, ensure_ascii=False) + "\n")

    def language(self, conversation: Conversation, fixed: str | None) -> str:
        if fixed:
            return fixed
        if conversation.lang != UNKNOWN_LANG or self.lid is None:
            return conversation.lang
        return self.lid.detect("\n".join(m.content for m in conversation.messages)[:LID_CHARS])[0]


def _candidates(source: SourceConfig, run: _Run) -> Iterator[tuple[int, bytes, Conversation]]:
    """(order, dedup key, conversation) of the source's records that pass every filter but the cap."""
    local: set[bytes] = set()
    order = 0
    for path in source.paths:
        for entry in read_entries(Path(path.path), source.format, source.name):
            run.bar.update()
            if entry.malformed is not None:
                if run.strict:
                    raise PolyLMError(f"{entry.where}: malformed {source.format} record: {entry.malformed} (--strict)")
                run.drop(source.name, None, entry.malformed, entry.where)
                continue
            conversation = replace(entry.conversation, lang=run.language(entry.conversation, path.lang or source.lang))
            run.tally.read(source.name, conversation.lang)
            key = conversation_key(conversation)
            reason = _reason(entry, conversation, key, local, run)
            if reason is not None:
                run.drop(source.name, conversation.lang, reason, entry.where)
                continue
            local.add(key)
            yield order, key, conversation
            order += 1


def _reason(entry: Entry, conversation: Conversation, key: bytes, local: set[bytes], run: _Run) -> str | None:
    """Why the conversation is dropped (None: it is kept so far)."""
    reason = entry.rejected or problem(conversation)
    if reason is None and run.config.dedup and (key in run.seen or key in local):
        reason = DUPLICATE
    if reason is None and run.length is not None and run.length.too_long(conversation):
        reason = f"longer than {run.length.max_tokens} tokens"
    return reason


def _sampled(source: SourceConfig, run: _Run) -> Iterator[tuple[bytes, Conversation]]:
    """The candidates, or with max_records the ones of smallest seeded hash, in file order."""
    candidates = _candidates(source, run)
    if source.max_records is None:
        yield from ((key, conversation) for _, key, conversation in candidates)
        return
    heap: list[tuple[int, int, bytes, Conversation]] = []  # (-priority, order, key, conversation): a max-heap
    for order, key, conversation in candidates:
        item = (-_priority(run.config.seed, key), order, key, conversation)
        if len(heap) < source.max_records:
            heapq.heappush(heap, item)
            continue
        evicted = heapq.heappushpop(heap, item)[3]
        run.tally.dropped(source.name, evicted.lang, SAMPLED_OUT)
    for _, _, key, conversation in sorted(heap, key=lambda item: item[1]):
        yield key, conversation


def _priority(seed: int, key: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}\0".encode() + key, digest_size=8).digest(), "big")


def prepare(
    config: MixtureConfig, out: Path, config_path: Path | None = None, strict: bool = False, progress: bool = True
) -> dict:
    """Write the mixture into `out` (see the module docstring) and return the stats saved as stats.json.

    With `strict`, the first malformed record raises PolyLMError naming its `FILE:LINE` and nothing is kept.
    """
    for source in config.sources:
        for path in source.paths:
            if not Path(path.path).is_file():
                raise PolyLMError(f"source {source.name!r}: {path.path}: file not found")
    length = LengthFilter(config.length) if config.length.max_tokens is not None else None
    out.mkdir(parents=True, exist_ok=True)
    tally = Tally({source.name: source.format for source in config.sources})
    # Each output appears whole or not at all (polylm.durable); an error or a kill leaves the previous ones.
    with (
        written_whole(out / "train.jsonl") as train,
        written_whole(out / "validation.jsonl") as validation,
        written_whole(out / "dropped.jsonl") as dropped,
        progress_bar(unit=" records", disable=not progress) as bar,
    ):
        lid = LanguageFilter(config.lid_languages) if config.language_id else None
        run = _Run(config, tally, dropped, strict, bar, length, lid, set())
        for source in config.sources:
            bar.set_description(source.name)
            kept = []
            for key, conversation in _sampled(source, run):
                split = "validation" if held_out(key, config.validation_fraction) else "train"
                (validation if split == "validation" else train).write(
                    json.dumps(conversation.to_dict(), ensure_ascii=False) + "\n"
                )
                tally.kept(source.name, conversation.lang, split)
                kept.append(key)
            run.seen.update(kept)
    stats = {"config_file": str(config_path) if config_path else None, **tally.to_dict()}
    write_json(out / "stats.json", stats)
    write_json(out / "mixture.json", {"config_file": str(config_path) if config_path else None, **config.to_dict()})
    return stats


def load_stats(out: Path) -> dict:
    return read_json(Path(out) / "stats.json", "polylm instruct prepare")


def read_split(out: Path, split: str = "train") -> list[Conversation]:
    """The `train` or `validation` conversations of a directory written by `polylm instruct prepare`."""
    path = Path(out) / f"{split}.jsonl"
    if split not in ("train", "validation") or not path.is_file():
        raise PolyLMError(f"{path}: not found; is {out} a directory written by `polylm instruct prepare`?")
    return list(read_conversations(path))
