"""The batching engine: one worker thread owns the model and decodes every running request together.

Continuous batching over `BatchCache`: at every step the engine admits queued requests that fit in
`max_batch` rows (each is prefilled alone, then joins the batch), runs one forward over all running rows, picks
each request's tokens exactly as `generate` would for it alone (same processors, same private seeded generator
over the request's rows), and drops requests that finished, were cancelled or ran out of time. Beam-search
requests run through `beam_search` between steps, batched with any queued ones of the same settings; prompt
scoring (`echo` + `logprobs`) is one forward between steps.

Nothing here knows about HTTP: a job reports through its `emit` callback (called on the worker thread) with
`Step`, `Done`, `Scored` or `Failed` events.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from polylm.errors import PolyLMError
from polylm.generate.batch import Generation, StopCriterion
from polylm.generate.beam_search import beam_search
from polylm.generate.config import GenerationConfig
from polylm.generate.processors import repetition_penalty, warp
from polylm.generate.text import TextGenerator
from polylm.serve.cache import BatchCache

log = logging.getLogger("polylm.serve")

SCORE_CHUNK = 256  # prompt positions per output-layer GEMM when scoring: bounds memory for a 256K vocabulary


class QueueFull(Exception):
    """The queue holds `max_queue` waiting requests already."""


class EngineTimeout(Exception):
    """A request waited or ran longer than the server's timeout."""


class EngineClosed(Exception):
    """The server is shutting down."""


@dataclass
class TokenLogprob:
    logprob: float
    top: list[tuple[int, float]]
    """The most likely tokens at this position, best first (empty when not asked for)."""


@dataclass
class RowStep:
    row: int
    token: int
    finish_reason: str | None
    logprob: TokenLogprob | None = None


@dataclass
class Step:
    """Tokens chosen in one decoding step, for the rows of the job that were still running."""

    rows: list[RowStep]


@dataclass
class Done:
    generations: list[Generation]
    logprobs: list[list[TokenLogprob]] | None = None
    """Per row, the generated tokens' log-probabilities (when the job asked for them)."""


@dataclass
class Scored:
    """Per prompt token: None for the first, then log P(token | earlier tokens) and the top alternatives."""

    entries: list[TokenLogprob | None]


@dataclass
class Failed:
    error: Exception


Event = Step | Done | Scored | Failed


@dataclass(eq=False)
class Job:
    """One prompt's work. kind: "generate" (greedy/sampling, `rows` samples), "beam" or "score"."""

    kind: str
    prompt: list[int]
    emit: Callable[[Event], None]
    config: GenerationConfig = field(default_factory=GenerationConfig)
    rows: int = 1
    logprobs: int | None = None
    """Report generated tokens' log-probabilities with this many alternatives (None: do not compute them)."""
    stream: bool = False
    """Emit a `Step` after every decoding step; otherwise only after the first one, and `Done`."""
    timeout: float = 600.0
    submitted: float = field(default_factory=time.monotonic)
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def deadline(self) -> float:
        return self.submitted + self.timeout

    def expired(self, now: float | None = None) -> bool:
        return (now if now is not None else time.monotonic()) > self.deadline

    def cancel(self) -> None:
        self.cancelled.set()

    @property
    def width(self) -> int:
        """Rows of the model batch this job occupies."""
        return self.config.num_beams if self.kind == "beam" else self.rows if self.kind == "generate" else 1


class _Group:
    """A running generate job: its rows' tokens, finish state and sampling generator."""

    def __init__(self, job: Job, stop: StopCriterion | None, context: int, device: torch.device) -> None:
        config = job.config
        self.job, self.stop, self.config = job, stop, config
        self.rows = job.rows
        self.tokens: list[list[int]] = [[] for _ in range(self.rows)]
        self.reasons: list[str] = ["length"] * self.rows
        self.unfinished = [True] * self.rows
        self.logprobs: list[list[TokenLogprob]] | None = (
            [[] for _ in range(self.rows)] if job.logprobs is not None else None
        )
        self.max_new = min(config.new_tokens_for(len(job.prompt)), context - len(job.prompt))
        self.generator = torch.Generator(device=device).manual_seed(config.seed) if config.seed is not None else None
        self.sequences = None
        if config.repetition_penalty != 1.0:
            self.sequences = torch.tensor([job.prompt] * self.rows, dtype=torch.long, device=device)
        self.plain_greedy = not config.do_sample and self.sequences is None and job.logprobs is None
        self.eos = set(config.eos_ids)
        self.steps = 0
        self.last = [config.pad_id] * self.rows

    @property
    def done(self) -> bool:
        return not any(self.unfinished)

    def choose(self, logits: torch.Tensor, greedy: list[int] | None = None) -> list[RowStep]:
        """Pick this step's tokens from (rows, vocab) logits, as `sample_steps` does for the job alone.

        `greedy`: the rows' argmax, computed for the whole batch at once, used by plain greedy jobs.
        """
        config = self.config
        chosen = top = None
        if self.plain_greedy and greedy is not None:
            picked = greedy
        else:
            scores = logits.float()
            if self.sequences is not None:
                pads = torch.zeros(self.rows, dtype=torch.long, device=scores.device)
                scores = repetition_penalty(scores, self.sequences, pads, config.repetition_penalty)
            if config.do_sample:
                probs = torch.softmax(warp(scores, config), dim=-1)
                tokens = torch.multinomial(probs, num_samples=1, generator=self.generator).squeeze(1)
            else:
                tokens = scores.argmax(dim=-1)
            unfinished = torch.tensor(self.unfinished, device=tokens.device)
            tokens = torch.where(unfinished, tokens, config.pad_id)
            if self.sequences is not None:
                self.sequences = torch.cat([self.sequences, tokens[:, None]], dim=1)
            if self.job.logprobs is not None:
                log_probs = torch.log_softmax(logits.float(), dim=-1)
                chosen = log_probs.gather(1, tokens[:, None])[:, 0].tolist()
                if self.job.logprobs > 0:
                    values, indices = log_probs.topk(min(self.job.logprobs, log_probs.shape[-1]), dim=-1)
                    top = (indices.tolist(), values.tolist())
            picked = tokens.tolist()
        self.steps += 1
        updates = []
        for row in range(self.rows):
            if not self.unfinished[row]:
                self.last[row] = config.pad_id
                continue
            token = self.last[row] = picked[row]
            self.tokens[row].append(token)
            reason = None
            if token in self.eos or (self.stop is not None and self.stop(self.tokens[row])):
                reason = "stop"
            elif self.steps >= self.max_new:
                reason = "length"
            if reason is not None:
                self.reasons[row] = reason
                self.unfinished[row] = False
            logprob = None
            if chosen is not None:
                alternatives = list(zip(top[0][row], top[1][row], strict=True)) if top is not None else []
                logprob = TokenLogprob(chosen[row], alternatives)
                self.logprobs[row].append(logprob)
            updates.append(RowStep(row, token, reason, logprob))
        return updates

    def report(self, updates: list[RowStep]) -> None:
        """Tell the job about this step (every step when it streams, else only the first: time to first token)."""
        if self.job.stream or self.steps == 1:
            _emit(self.job, Step(updates))
        if self.done:
            _emit(self.job, Done(self.generations(), self.logprobs))

    def generations(self) -> list[Generation]:
        return [Generation(tokens, reason) for tokens, reason in zip(self.tokens, self.reasons, strict=True)]


@dataclass
class EngineStats:
    """Counters the metrics endpoint reads (written by the worker thread only)."""

    steps: int = 0
    step_rows: int = 0
    prefill_tokens: int = 0
    generated_tokens: int = 0
    cancelled: int = 0
    timeouts: int = 0
    beam_batches: int = 0
    scored_prompts: int = 0


class Engine:
    """Owns the model on one worker thread; `submit` jobs from any thread."""

    def __init__(
        self,
        generator: TextGenerator,
        max_batch: int = 16,
        max_queue: int = 256,
        threads: int | None = None,
        idle_poll: float = 0.05,
    ) -> None:
        if max_batch < 1:
            raise PolyLMError(f"--max-batch must be at least 1, got {max_batch}")
        if max_queue < 1:
            raise PolyLMError(f"--max-queue must be at least 1, got {max_queue}")
        self.generator = generator
        self.model = generator.model
        self.context = self.model.config.max_position_embeddings
        self.device = self.model.device
        self.max_batch, self.max_queue, self.threads = max_batch, max_queue, threads
        self.stats = EngineStats()
        self._idle_poll = idle_poll
        self._pending: deque[Job] = deque()
        self._groups: list[_Group] = []
        self._cache = BatchCache(self.model)
        self._condition = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="polylm-engine", daemon=True)

    # ---- called from other threads -------------------------------------------------------------------------

    def start(self) -> Engine:
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def submit(self, job: Job) -> None:
        """Queue `job`; raises QueueFull when `max_queue` jobs are waiting already."""
        if job.width > self.max_batch:
            raise PolyLMError(f"job needs {job.width} rows, more than --max-batch {self.max_batch}")
        with self._condition:
            if self._closed:
                raise EngineClosed("the server is shutting down")
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"{len(self._pending)} requests are waiting already (--max-queue {self.max_queue})")
            self._pending.append(job)
            self._condition.notify()

    @property
    def queue_length(self) -> int:
        return len(self._pending)

    @property
    def running_rows(self) -> int:
        """Rows still decoding: a group that has sent its last event no longer counts, even before it is pruned."""
        return sum(group.rows for group in self._groups if not group.done)

    @property
    def running_jobs(self) -> int:
        return sum(not group.done for group in self._groups)

    @property
    def cache_rows(self) -> int:
        """Rows (sequence slots) the batch's KV cache holds: what a job leaving the batch must give back."""
        return self._cache.rows

    @property
    def cache_bytes(self) -> int:
        """Bytes of the batch's KV cache (keys and values, all capacity), for watching memory under load."""
        cache = self._cache
        return cache.keys.nbytes + cache.values.nbytes

    # ---- the worker thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)  # OpenMP's thread count is per thread: set it where the model runs
        with torch.inference_mode():
            while True:
                with self._condition:
                    while not self._closed and not self._pending and not self._groups:
                        self._condition.wait(self._idle_poll)
                    if self._closed:
                        break
                    admitted = self._admit()
                for batch in admitted:
                    try:
                        self._start(batch)
                    except Exception as exc:  # e.g. out of memory in a large beam batch: fail these, go on
                        log.exception("starting a batch of %d job(s) failed", len(batch))
                        for job in batch:
                            _emit(job, Failed(exc))
                try:
                    self._prune()
                    if self._groups:
                        self._step()
                        self._prune()
                except Exception as exc:  # a bug: fail what is in flight, keep serving the next requests
                    log.exception("engine step failed")
                    for group in self._groups:
                        _emit(group.job, Failed(exc))
                    self._groups = []
                    self._cache = BatchCache(self.model)
        closed = EngineClosed("the server is shutting down")
        for job in [*self._pending, *(group.job for group in self._groups)]:
            _emit(job, Failed(closed))
        self._pending.clear()
        self._groups = []

    def _admit(self) -> list[list[Job]]:
        """Take queued jobs that fit, in order (called with the lock held). Beam jobs come with their peers."""
        now = time.monotonic()
        for job in [job for job in self._pending if job.cancelled.is_set() or job.expired(now)]:
            self._pending.remove(job)
            self._finish_unstarted(job)
        admitted: list[list[Job]] = []
        free = self.max_batch - self.running_rows
        while self._pending:
            job = self._pending[0]
            if job.kind == "generate":
                if job.rows > free:
                    break
                free -= job.rows
                admitted.append([self._pending.popleft()])
            elif job.kind == "beam":
                peers = [other for other in self._pending if other.kind == "beam" and other.config == job.config]
                peers = peers[: max(1, self.max_batch // job.config.num_beams)]
                for other in peers:
                    self._pending.remove(other)
                admitted.append(peers)
                break  # a beam batch blocks the worker: let running rows take their next step first
            else:
                admitted.append([self._pending.popleft()])
        return admitted

    def _finish_unstarted(self, job: Job, what: str = "start") -> None:
        if job.cancelled.is_set():
            self.stats.cancelled += 1
            return
        self.stats.timeouts += 1
        _emit(job, Failed(EngineTimeout(f"request did not {what} within the server's timeout of {job.timeout:g} s")))

    def _start(self, jobs: list[Job]) -> None:
        kind = jobs[0].kind
        if kind == "score":
            self._score(jobs[0])
        elif kind == "beam":
            self._beam(jobs)
        else:
            self._prefill(jobs[0])

    def _prefill(self, job: Job) -> None:
        group = _Group(job, self.generator._stop_criterion(job.config), self.context, self.device)
        if group.max_new <= 0:
            _emit(job, Done(group.generations()))
            return
        prompt = torch.tensor([job.prompt], dtype=torch.long, device=self.device)
        cache = self.model.new_cache(1, len(job.prompt))
        logits = self.model(prompt, cache=cache, last_token_only=True)[:, -1]
        self.stats.prefill_tokens += len(job.prompt)
        updates = group.choose(logits.expand(group.rows, -1))
        self.stats.generated_tokens += len(updates)
        group.report(updates)
        if group.done:
            return
        shape = (-1, group.rows, -1, -1, -1)
        self._cache.add(cache.keys.expand(shape), cache.values.expand(shape))
        self._groups.append(group)

    def _step(self) -> None:
        cache = self._cache
        cache.reserve(1)
        tokens = torch.tensor([t for group in self._groups for t in group.last], dtype=torch.long, device=self.device)
        mask, positions = cache.attention_mask(), cache.positions()
        logits = self.model(tokens[:, None], mask, positions, cache, last_token_only=True)[:, -1]
        self.stats.steps += 1
        self.stats.step_rows += tokens.numel()
        greedy = logits.argmax(dim=-1).tolist() if any(g.plain_greedy for g in self._groups) else None
        offset = 0
        for group in self._groups:
            rows = slice(offset, offset + group.rows)
            updates = group.choose(logits[rows], greedy[rows] if greedy is not None else None)
            offset += group.rows
            self.stats.generated_tokens += len(updates)
            group.report(updates)

    def _prune(self) -> None:
        """Drop finished, cancelled and timed-out groups from the batch and the cache.

        Counters and timeout events come after the rows are gone, so whoever sees them (a /metrics scrape, a
        client told of its timeout) sees the rows free too.
        """
        now = time.monotonic()
        keep, rows, offset, cancelled, expired = [], [], 0, 0, []
        for group in self._groups:
            job = group.job
            if not group.done and job.cancelled.is_set():
                cancelled += 1
            elif not group.done and job.expired(now):
                expired.append(job)
            elif not group.done:
                keep.append(group)
                rows.extend(range(offset, offset + group.rows))
            offset += group.rows
        if len(keep) != len(self._groups):
            self._cache.keep(torch.tensor(rows, dtype=torch.long, device=self.device))
            self._groups = keep
        self.stats.cancelled += cancelled
        self.stats.timeouts += len(expired)
        for job in expired:
            _emit(
                job, Failed(EngineTimeout(f"request did not finish within the server's timeout of {job.timeout:g} s"))
            )

    def _beam(self, jobs: list[Job]) -> None:
        config = jobs[0].config
        stop = self.generator._stop_criterion(config)

        def abandoned() -> bool:
            now = time.monotonic()
            return all(job.cancelled.is_set() or job.expired(now) for job in jobs)

        def criterion(ids: list[int]) -> bool:  # also ends the search early when nobody waits for it any more
            return abandoned() or (stop is not None and stop(ids))

        results = beam_search(self.model, [job.prompt for job in jobs], config, criterion)
        self.stats.beam_batches += 1
        self.stats.prefill_tokens += sum(len(job.prompt) for job in jobs)
        now = time.monotonic()
        for job, hypotheses in zip(jobs, results, strict=True):
            if job.cancelled.is_set():
                self.stats.cancelled += 1
            elif job.expired(now):
                self._finish_unstarted(job, "finish")
            else:
                self.stats.generated_tokens += sum(len(h.token_ids) for h in hypotheses)
                _emit(job, Done(hypotheses))

    def _score(self, job: Job) -> None:
        top_k = job.logprobs or 0
        ids = torch.tensor([job.prompt], dtype=torch.long, device=self.device)
        hidden = self.model.hidden_states(ids)[0, :-1]
        targets = ids[0, 1:]
        entries: list[TokenLogprob | None] = [None]
        for start in range(0, hidden.shape[0], SCORE_CHUNK):
            log_probs = torch.log_softmax(self.model.wte.attend(hidden[start : start + SCORE_CHUNK]).float(), dim=-1)
            chosen = log_probs.gather(1, targets[start : start + SCORE_CHUNK, None])[:, 0].tolist()
            if top_k > 0:
                values, indices = log_probs.topk(min(top_k, log_probs.shape[-1]), dim=-1)
                tops = [list(zip(i, v, strict=True)) for i, v in zip(indices.tolist(), values.tolist(), strict=True)]
            else:
                tops = [[] for _ in chosen]
            entries.extend(TokenLogprob(c, t) for c, t in zip(chosen, tops, strict=True))
        self.stats.scored_prompts += 1
        self.stats.prefill_tokens += len(job.prompt)
        _emit(job, Scored(entries))


def _emit(job: Job, event: Event) -> None:
    try:
        job.emit(event)
    except Exception:  # the receiver is gone (its event loop closed): nothing to tell
        log.debug("dropped an event for a job whose receiver is gone", exc_info=True)
