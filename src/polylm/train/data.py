"""What the trainer reads: global batches of samples, their micro batches as tensors, and validation batches.

Pretraining (the curriculum of `polylm data prepare`) and instruction tuning (`polylm.instruct.sft`) both provide a
`TrainingData`; the trainer does not know which. A sample is `seq_len + 1` tokens; the model reads the first
`seq_len` and predicts the last `seq_len`. Targets of -100 are not counted (prompt tokens, padding).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from polylm.data.curriculum import CurriculumSampler
from polylm.data.prepare import load_summary, open_sampler
from polylm.data.shards import ShardSet
from polylm.loss import IGNORE_INDEX
from polylm.tokenizer import Tokenizer


@dataclass
class MicroBatch:
    """One forward/backward's worth of sequences, as the model takes them."""

    inputs: torch.Tensor
    targets: torch.Tensor
    """Next-token ids, -100 where not counted."""
    languages: np.ndarray
    """Language of each target position, (batch, seq_len)."""
    position_ids: torch.Tensor | None = None
    segment_ids: torch.Tensor | None = None
    """Packed examples: which example each position belongs to (attention stays inside one)."""

    def to(self, device: torch.device) -> MicroBatch:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return MicroBatch(move(self.inputs), move(self.targets), self.languages, move(self.position_ids),
                          move(self.segment_ids))  # fmt: skip


class TrainingData(Protocol):
    metric: str
    """Name of the loss in the metrics: `loss` (every token) or `response_loss` (instruction tuning)."""
    seq_len: int
    num_samples: int
    tokenizer: Tokenizer

    def batches(self, batch_size: int) -> Iterator[Sequence]: ...

    def collate(self, samples: Sequence) -> MicroBatch: ...

    def validation(self, max_tokens: int, micro_batch: int) -> Iterator[MicroBatch]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class PretrainingData:
    """The curriculum sampler of a prepared data directory and its held-out shards."""

    metric = "loss"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.sampler: CurriculumSampler = open_sampler(data_dir)
        self.tokenizer = Tokenizer.from_dir(data_dir / "tokenizer")
        self.seq_len = self.sampler.config.seq_len
        self.num_samples = self.sampler.num_samples

    def batches(self, batch_size: int) -> Iterator[Sequence]:
        return self.sampler.batches(batch_size)

    def collate(self, samples: Sequence) -> MicroBatch:
        tokens = torch.from_numpy(np.stack([s.tokens for s in samples]))
        languages = np.array([s.languages[1:] for s in samples])
        return MicroBatch(tokens[:, :-1], tokens[:, 1:], languages)

    def validation(self, max_tokens: int, micro_batch: int) -> Iterator[MicroBatch]:
        """Each held-out source packed like training samples (windows of seq_len + 1 tokens, stride seq_len), up to
        `max_tokens` per source (`validation_fraction` of `polylm data prepare`)."""
        summary = load_summary(self.data_dir)
        for source in summary.get("validation", []):
            shards = ShardSet(self.data_dir / "validation" / source["name"])
            stream = np.concatenate([shards.document(i) for i in range(shards.num_documents)])[: max_tokens + 1]
            seq_len = self.seq_len
            windows = [stream[i : i + seq_len + 1] for i in range(0, len(stream) - seq_len, seq_len)]
            for start in range(0, len(windows), micro_batch):
                tokens = torch.from_numpy(np.stack(windows[start : start + micro_batch]).astype(np.int64))
                languages = np.full(tuple(tokens[:, 1:].shape), source["lang"])
                yield MicroBatch(tokens[:, :-1], tokens[:, 1:], languages)

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)


def language_sums(batch: MicroBatch, losses: torch.Tensor) -> dict[str, tuple[float, int]]:
    """Per language: the sum of the counted positions' losses and their number."""
    counted = (batch.targets != IGNORE_INDEX).flatten().cpu()
    names, index = np.unique(batch.languages.ravel()[counted.numpy()], return_inverse=True)
    weights = losses.flatten().double().cpu()[counted]
    sums = torch.bincount(torch.from_numpy(index), weights=weights, minlength=len(names))
    counts = np.bincount(index, minlength=len(names))
    return {lang: (total, count) for lang, total, count in zip(names.tolist(), sums.tolist(), counts.tolist(),
                                                                  strict=True)}  # fmt: skip
