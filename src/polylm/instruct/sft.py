"""Conversations as supervised training sequences: template rendering, response-only labels, packing.

A conversation is rendered with the same template functions inference uses (`polylm.templates`): the prompt of
turn i is `render_prompt(template, query_i, earlier_turns)`, and the text it adds to the conversation so far is
what the model reads. Every response is followed by `</s>`; response tokens and that `</s>` are the labels, every
prompt token is -100. For a single turn the prompt bytes are exactly what `polylm chat --template T` sends.
Multi-turn: after each `</s>` the next prompt piece continues with the template's own separator (the official
demos keep no `</s>` between turns in the history text; putting it here is our reading, so that the model learns
to stop after every reply) [UNVERIFIED convention].
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from polylm.errors import PolyLMError
from polylm.instruct.prepare import read_split
from polylm.instruct.records import Conversation, problem
from polylm.loss import IGNORE_INDEX
from polylm.templates import Turn, render_prompt
from polylm.tokenizer import Tokenizer
from polylm.train.config import SftSection
from polylm.train.data import MicroBatch


def turns_of(conversation: Conversation) -> list[Turn]:
    """(query, response) pairs; a leading system message is put before the first query, as at inference."""
    messages = list(conversation.messages)
    system = messages.pop(0).content + "\n" if messages and messages[0].role == "system" else ""
    turns = [(messages[i].content, messages[i + 1].content) for i in range(0, len(messages) - 1, 2)]
    return [(system + turns[0][0], turns[0][1]), *turns[1:]] if system else turns


def pieces(template: str, conversation: Conversation) -> list[tuple[str, bool]]:
    """The conversation's text in `template`, as (piece, is_response) in order."""
    out: list[tuple[str, bool]] = []
    turns = turns_of(conversation)
    so_far = ""
    for index, (query, response) in enumerate(turns):
        prompt = render_prompt(template, query, turns[:index])
        if not prompt.startswith(so_far):
            raise PolyLMError(f"template {template!r} does not extend the conversation so far at turn {index + 1}")
        out.append((prompt[len(so_far) :], False))
        out.append((response, True))
        so_far = prompt + response
    return out


@dataclass
class Example:
    ids: list[int]
    labels: list[int]
    """ids where trained on (responses and their </s>), -100 elsewhere: aligned with ids, as in transformers."""
    lang: str


def encode(tokenizer: Tokenizer, template: str, conversation: Conversation) -> Example:
    """Token ids and labels. A response is tokenized in the context of the prompt before it (the ids of
    prompt + response past the prompt's own ids), so that its first piece is what the model will generate."""
    ids: list[int] = []
    labels: list[int] = []
    prompt_text, prompt_ids = "", []
    for text, is_response in pieces(template, conversation):
        if not is_response:
            prompt_text, prompt_ids = text, tokenizer.encode(text)
            ids += prompt_ids
            labels += [IGNORE_INDEX] * len(prompt_ids)
            continue
        joined = tokenizer.encode(prompt_text + text)
        response = joined[len(prompt_ids) :] if joined[: len(prompt_ids)] == prompt_ids else tokenizer.encode(text)
        response = [*response, tokenizer.eos_id]
        ids += response
        labels += response
    return Example(ids, labels, conversation.lang)


@dataclass
class PackedSample:
    """One training sequence of seq_len + 1 positions holding one (padded) or several (packed) examples."""

    tokens: np.ndarray
    labels: np.ndarray
    positions: np.ndarray
    """Restart at 0 with each example."""
    segments: np.ndarray
    """Example number within the sequence; -1 for padding."""
    languages: np.ndarray


def pack(examples: Sequence[Example], length: int, packing: bool, pad_id: int) -> list[PackedSample]:
    """Fill sequences of `length` positions in order: several examples each (packing) or one each (padding).

    Examples longer than `length` must have been removed (`InstructionData` counts them).
    """
    groups: list[list[Example]] = []
    used = length
    for example in examples:
        if not packing or used + len(example.ids) > length:
            groups.append([])
            used = 0
        groups[-1].append(example)
        used += len(example.ids)
    out = []
    for group in groups:
        tokens = np.full(length, pad_id, dtype=np.int64)
        labels = np.full(length, IGNORE_INDEX, dtype=np.int64)
        positions = np.zeros(length, dtype=np.int64)
        segments = np.full(length, -1, dtype=np.int64)
        languages = np.full(length, "", dtype=object)
        start = 0
        for number, example in enumerate(group):
            end = start + len(example.ids)
            tokens[start:end], labels[start:end] = example.ids, example.labels
            positions[start:end], segments[start:end] = np.arange(end - start), number
            languages[start:end] = example.lang
            start = end
        positions[start:] = np.arange(length - start)
        out.append(PackedSample(tokens, labels, positions, segments, languages))
    return out


class InstructionData:
    """Training sequences from a `polylm instruct prepare` directory, for the trainer (`TrainingData`).

    Sequences are packed once in the file's order; each epoch visits them in its own seeded order. Sample i is a
    pure function of i, so resuming needs only the next sample index. Conversations longer than a sequence are
    left out and counted in `dropped` (the run writes it to `RUN/sft_data.json`).
    """

    metric = "response_loss"

    def __init__(self, data_dir: Path, tokenizer: Tokenizer, sft: SftSection, seed: int) -> None:
        self.tokenizer, self.sft, self.seed = tokenizer, sft, seed
        self.seq_len = sft.seq_len
        self.dropped: Counter[str] = Counter()
        examples = self._examples(read_split(data_dir, "train"), "train")
        self.train = pack(examples, self.seq_len + 1, sft.packing, tokenizer.eos_id)
        validation = data_dir / "validation.jsonl"
        self.held_out = self._examples(read_split(data_dir, "validation"), "validation") if validation.is_file() else []
        if not self.train:
            raise PolyLMError(f"{data_dir}: no training conversation fits sft.seq_len {self.seq_len}")
        self.num_samples = len(self.train) * sft.epochs
        self.next_sample = 0
        digest = hashlib.sha256((data_dir / "train.jsonl").read_bytes())
        digest.update(json.dumps([sft.template, sft.seq_len, sft.packing, seed, tokenizer.vocab_size]).encode())
        self.fingerprint = digest.hexdigest()[:16]

    def _examples(self, conversations: Sequence[Conversation], split: str) -> list[Example]:
        kept = []
        for number, conversation in enumerate(conversations, 1):
            if (reason := problem(conversation)) is not None:
                raise PolyLMError(f"{split}.jsonl: conversation {number}: {reason}")
            example = encode(self.tokenizer, self.sft.template, conversation)
            if len(example.ids) > self.seq_len + 1:
                self.dropped[f"{split}: longer than sft.seq_len + 1 ({conversation.lang})"] += 1
            else:
                kept.append(example)
        return kept

    def sample(self, index: int) -> PackedSample:
        epoch, within = divmod(index, len(self.train))
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.train))
        return self.train[order[within]]

    def batches(self, batch_size: int) -> Iterator[list[PackedSample]]:
        while self.next_sample + batch_size <= self.num_samples:
            batch = [self.sample(i) for i in range(self.next_sample, self.next_sample + batch_size)]
            self.next_sample += batch_size
            yield batch

    def collate(self, samples: Sequence[PackedSample]) -> MicroBatch:
        stack = lambda name: torch.from_numpy(np.stack([getattr(s, name) for s in samples]))  # noqa: E731
        tokens, labels, positions, segments = (stack(n) for n in ("tokens", "labels", "positions", "segments"))
        languages = np.stack([s.languages[1:] for s in samples])
        return MicroBatch(tokens[:, :-1], labels[:, 1:], languages, positions[:, :-1], segments[:, :-1])

    def validation(self, max_tokens: int, micro_batch: int) -> Iterator[MicroBatch]:
        """Held-out conversations, packed per language up to about `max_tokens` tokens each."""
        for lang in sorted({e.lang for e in self.held_out}):
            chosen, total = [], 0
            for example in self.held_out:
                if example.lang == lang and total < max_tokens:
                    chosen.append(example)
                    total += len(example.ids)
            sequences = pack(chosen, self.seq_len + 1, self.sft.packing, self.tokenizer.eos_id)
            for start in range(0, len(sequences), micro_batch):
                yield self.collate(sequences[start : start + micro_batch])

    def state_dict(self) -> dict:
        return {"next_sample": self.next_sample, "fingerprint": self.fingerprint}

    def load_state_dict(self, state: dict) -> None:
        if state.get("fingerprint") != self.fingerprint:
            raise PolyLMError(
                "instruction data: the checkpoint was trained on other data or sft settings "
                f"({state.get('fingerprint')} vs {self.fingerprint}); resume with the same data and sft section"
            )
        self.next_sample = state["next_sample"]
