"""The curriculum: stages of a token budget with their own source mixture, and a sampler whose every
sample is a pure function of (seed, global sample index).

PolyLM raised the non-English share from 30% in the first stage to 60% in the final one (abstract;
stage lengths and per-source weights are unpublished, so the `polylm` preset's switch point and
bilingual up-weighting are our defaults). Following Megatron's blended dataset, which PolyLM trained with:

- each source is one stream: its documents (each ending in `</s>`) concatenated in a seeded random
  order per epoch; sample k of a source is stream[k·L : k·L + L + 1] (L + 1 tokens, inputs and shifted
  targets; documents are packed across sample boundaries, nothing is padded);
- within a stage, global samples are dealt to sources by Megatron's greedy rule (always to the source
  furthest below its weight), so every prefix of the stage matches the weights to within one sample;
- a source's sample counter runs on across stages, so stage 2 continues where stage 1 stopped;
- a source used up starts a new epoch in a new order (one warning per source, not one per epoch; `exhausted`
  holds the highest epoch each source reached).

Every rank and every resume computes the same sample for the same index; `state_dict` holds the next index
and a fingerprint of the shards and the mixture, and loading refuses a changed fingerprint unless forced.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from polylm.data.shards import ShardSet
from polylm.errors import PolyLMError


@dataclass
class Stage:
    name: str
    tokens: int
    """Token budget of the stage (rounded down to whole samples)."""
    non_english_share: float | None = None
    """Target share of non-English tokens; sources of each side get shares proportional to their size."""
    bilingual_boost: float = 1.0
    """Within the non-English side, bilingual sources count this many times their size."""
    weights: dict[str, float] | None = None
    """Explicit per-source weights instead of a share (normalised)."""


@dataclass
class CurriculumConfig:
    stages: list[Stage]
    seq_len: int = 2048
    seed: int = 1234


def polylm_curriculum(
    total_tokens: int, switch_fraction: float = 0.8, seq_len: int = 2048, seed: int = 1234
) -> CurriculumConfig:
    """PolyLM's two stages: 30% non-English, then 60% with bilingual data up-weighted 2x.

    The 30% -> 60% shares are the paper's; the switch point (default: after 80% of the tokens) and the
    2x bilingual boost are UNVERIFIED defaults.
    """
    if not 0 < switch_fraction < 1:
        raise PolyLMError(f"curriculum: switch_fraction must be in (0, 1), got {switch_fraction}")
    first = int(total_tokens * switch_fraction)
    return CurriculumConfig(
        stages=[
            Stage("stage1", first, non_english_share=0.30),
            Stage("stage2", total_tokens - first, non_english_share=0.60, bilingual_boost=2.0),
        ],
        seq_len=seq_len,
        seed=seed,
    )


@dataclass
class SourceInfo:
    name: str
    lang: str
    bilingual: bool
    shards: ShardSet


@dataclass
class Sample:
    index: int
    stage: int
    source: str
    tokens: np.ndarray
    """L + 1 token ids (int64)."""
    languages: list[str] = field(default_factory=list)
    """Language of each token, as the documents it comes from declare."""


def stage_weights(stage: Stage, sources: list[SourceInfo]) -> np.ndarray:
    """Normalised sampling weight of each source in `stage`."""
    if stage.weights is not None:
        unknown = sorted(set(stage.weights) - {s.name for s in sources})
        if unknown:
            raise PolyLMError(f"curriculum stage {stage.name!r}: unknown sources {unknown}")
        weights = np.array([stage.weights.get(s.name, 0.0) for s in sources], dtype=np.float64)
    elif stage.non_english_share is not None:
        share = stage.non_english_share
        if not 0 <= share <= 1:
            raise PolyLMError(f"curriculum stage {stage.name!r}: non_english_share must be in [0, 1], got {share}")
        sizes = np.array([s.shards.num_tokens for s in sources], dtype=np.float64)
        english = np.array([s.lang == "en" and not s.bilingual for s in sources])
        boost = np.array([stage.bilingual_boost if s.bilingual else 1.0 for s in sources])
        weights = np.zeros(len(sources))
        for side, target, label in ((english, 1 - share, "English"), (~english, share, "non-English")):
            mass = (sizes * boost)[side]
            if target > 0 and mass.sum() == 0:
                raise PolyLMError(f"curriculum stage {stage.name!r}: no {label} source")
            if mass.sum() > 0:
                weights[side] = target * mass / mass.sum()
    else:
        raise PolyLMError(f"curriculum stage {stage.name!r}: give non_english_share or weights")
    if weights.sum() <= 0:
        raise PolyLMError(f"curriculum stage {stage.name!r}: all weights are zero")
    return weights / weights.sum()


def blend(weights: np.ndarray, samples: int) -> np.ndarray:
    """Deal `samples` global samples to sources: source d's k-th sample is due at (k + 1/2) / w_d, and samples
    go out in order of due time (ties to the lower source index). Like Megatron's greedy blending, every prefix
    of m samples gives each source m·w_d within one sample, and it is vectorised: O(n log n) in numpy."""
    due = [(np.arange(int(np.ceil(samples * w)) + 1) + 0.5) / w for w in weights if w > 0]
    owners = [np.full(len(d), k, dtype=np.int32) for k, d in zip(np.flatnonzero(weights > 0), due, strict=True)]
    due_all, owner_all = np.concatenate(due), np.concatenate(owners)
    order = np.lexsort((owner_all, due_all))[:samples]
    return owner_all[order]


class CurriculumSampler:
    """Fixed-length packed samples from tokenized sources, dealt by the curriculum's stages."""

    def __init__(self, sources: list[SourceInfo], config: CurriculumConfig) -> None:
        if not sources:
            raise PolyLMError("curriculum: no sources")
        if config.seq_len < 1:
            raise PolyLMError(f"curriculum: seq_len must be >= 1, got {config.seq_len}")
        self.sources, self.config = sources, config
        self.weights = [stage_weights(stage, sources) for stage in config.stages]
        sizes = [stage.tokens // config.seq_len for stage in config.stages]
        self.stage_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.assignment = np.concatenate([blend(w, n) for w, n in zip(self.weights, sizes, strict=True)])
        # Per global sample: its index within its source's stream (running on across stages).
        self.local_index = np.empty(len(self.assignment), dtype=np.int64)
        for source in range(len(sources)):
            chosen = self.assignment == source
            self.local_index[chosen] = np.arange(int(chosen.sum()))
        self._epochs: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self.exhausted: dict[str, int] = {}
        self.next_sample = 0
        self.fingerprint = self._fingerprint()

    @property
    def num_samples(self) -> int:
        return len(self.assignment)

    def _fingerprint(self) -> str:
        content = {
            "sources": [(s.name, s.lang, s.bilingual, s.shards.fingerprint) for s in self.sources],
            "config": asdict(self.config),
        }
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]

    def stage_of(self, index: int) -> int:
        return int(np.searchsorted(self.stage_starts, index, side="right") - 1)

    def _epoch(self, source: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(document order, cumulative token offsets) of one epoch of one source."""
        key = (source, epoch)
        if key not in self._epochs:
            lengths = self.sources[source].shards.doc_lengths()
            order = np.random.default_rng([self.config.seed, source, epoch]).permutation(len(lengths))
            offsets = np.concatenate([[0], np.cumsum(lengths[order])]).astype(np.int64)
            self._epochs[key] = (order, offsets)
        return self._epochs[key]

    def _stream(self, source: int, start: int, length: int) -> tuple[list[np.ndarray], list[str]]:
        """`length` tokens of a source's stream from `start`, and each token's language."""
        info = self.sources[source]
        total = info.shards.num_tokens
        languages = info.shards.doc_languages()
        pieces: list[np.ndarray] = []
        tags: list[str] = []
        position, end = start, start + length
        while position < end:
            epoch, offset = divmod(position, total)
            if epoch > 0 and self.exhausted.get(info.name, 0) < epoch:
                if info.name not in self.exhausted:
                    warnings.warn(
                        f"curriculum: source {info.name!r} ({total} tokens) is used up; reusing it, in a new order "
                        "each epoch (warned once per source)",
                        stacklevel=3,
                    )
                self.exhausted[info.name] = epoch
            order, offsets = self._epoch(source, epoch)
            doc = int(np.searchsorted(offsets, offset, side="right") - 1)
            while position < end and doc < len(order):
                tokens = info.shards.document(int(order[doc]))
                lo = offset - int(offsets[doc])
                piece = tokens[lo : lo + (end - position)]
                pieces.append(piece)
                tags.extend([languages[int(order[doc])]] * len(piece))
                position += len(piece)
                offset = int(offsets[doc + 1])
                doc += 1
        return pieces, tags

    def sample(self, index: int) -> Sample:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"sample {index} is outside the curriculum's {self.num_samples} samples")
        source = int(self.assignment[index])
        length = self.config.seq_len + 1
        pieces, tags = self._stream(source, int(self.local_index[index]) * self.config.seq_len, length)
        tokens = np.concatenate(pieces).astype(np.int64)
        return Sample(index, self.stage_of(index), self.sources[source].name, tokens, tags)

    def batches(self, batch_size: int) -> Iterator[list[Sample]]:
        """Global batches from `next_sample` on, advancing it; a rank takes its slice of each batch."""
        while self.next_sample + batch_size <= self.num_samples:
            batch = [self.sample(i) for i in range(self.next_sample, self.next_sample + batch_size)]
            self.next_sample += batch_size
            yield batch

    def state_dict(self) -> dict:
        return {"version": 1, "next_sample": self.next_sample, "fingerprint": self.fingerprint}

    def load_state_dict(self, state: Mapping, force: bool = False) -> None:
        if state.get("fingerprint") != self.fingerprint:
            message = (
                f"curriculum: the saved sampler state is for data/mixture {state.get('fingerprint')}, "
                f"this one is {self.fingerprint}"
            )
            if not force:
                raise PolyLMError(message + "; resume with force to accept the change")
            warnings.warn(message + "; resuming anyway (forced)", stacklevel=2)
        self.next_sample = int(state["next_sample"])

    def epochs(self) -> dict[str, float]:
        """How many passes over each source the whole curriculum makes (> 1: the source is reused)."""
        counts = np.bincount(self.assignment, minlength=len(self.sources))
        return {
            s.name: round(float(counts[k] * self.config.seq_len + 1) / s.shards.num_tokens, 3)
            for k, s in enumerate(self.sources)
        }

    def stage_summary(self) -> list[dict]:
        """Per stage: where it starts, its samples, and the non-English token share it realizes."""
        summary = []
        for number, stage in enumerate(self.config.stages):
            start, end = int(self.stage_starts[number]), int(self.stage_starts[number + 1])
            chosen = self.assignment[start:end]
            non_english = np.array([s.lang != "en" or s.bilingual for s in self.sources])
            share = float(non_english[chosen].mean()) if len(chosen) else 0.0
            mix = {s.name: int((chosen == k).sum()) for k, s in enumerate(self.sources)}
            summary.append(
                {
                    "name": stage.name,
                    "start_sample": start,
                    "samples": end - start,
                    "tokens": (end - start) * self.config.seq_len,
                    "target_non_english_share": stage.non_english_share,
                    "non_english_share": share,
                    "samples_per_source": mix,
                }
            )
        return summary
