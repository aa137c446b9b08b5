"""The batching engine on its own: continuous batching gives each request the tokens it would get alone."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from conftest import random_model
from polylm.config import ModelConfig
from polylm.generate import GenerationConfig, TextGenerator, generate
from polylm.generate.beam_search import beam_search
from polylm.serve.cache import BatchCache
from polylm.serve.engine import Done, Engine, EngineTimeout, Failed, Job, QueueFull, Scored, Step
from polylm.templates import render_messages, render_prompt

CONFIG = ModelConfig(
    name="engine-test", vocab_size=300, max_position_embeddings=96, hidden_size=64, num_layers=2, num_heads=4
)


class FakeTokenizer:
    """Ids as text: enough for the engine, which only decodes for stop strings."""

    vocab_size = CONFIG.vocab_size

    def decode(self, ids):
        return " ".join(map(str, ids))


@pytest.fixture(scope="module")
def model():
    return random_model(CONFIG, seed=3)


@pytest.fixture()
def engine(model):
    engine = Engine(TextGenerator(model, FakeTokenizer()), max_batch=8, max_queue=16).start()
    yield engine
    engine.close()


class Waiter:
    """Collects one job's events; `wait` returns the final event."""

    def __init__(self) -> None:
        self.events = []
        self.finished = threading.Event()

    def __call__(self, event) -> None:
        self.events.append(event)
        if isinstance(event, Done | Scored | Failed):
            self.finished.set()

    def wait(self, timeout: float = 60.0):
        assert self.finished.wait(timeout), "job did not finish"
        return self.events[-1]


def prompt(length: int, seed: int) -> list[int]:
    return torch.randint(3, CONFIG.vocab_size, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_batch_cache_right_aligns_and_trims(model):
    cache = BatchCache(model)
    shape = (CONFIG.num_layers, 1, CONFIG.num_heads, 5, CONFIG.hidden_size // CONFIG.num_heads)
    first = torch.ones(shape)
    cache.add(first, first)
    assert cache.length == 5 and cache.pads.tolist() == [0]
    second = torch.full((*shape[:3], 9, shape[4]), 2.0)
    cache.add(second, second)  # longer: the first row moves right
    assert cache.length == 9 and cache.pads.tolist() == [4, 0]
    assert cache.keys[0, 0, 0, 4:9].eq(1).all() and cache.keys[0, 1, 0, :9].eq(2).all()
    assert cache.positions()[:, 0].tolist() == [5, 9]
    assert cache.attention_mask()[0].tolist() == [0] * 4 + [1] * 6
    cache.keep(torch.tensor([0]))  # the long row leaves: its padding columns go too
    assert cache.length == 5 and cache.pads.tolist() == [0] and cache.attention_mask() is None
    assert cache.keys[0, 0, 0, :5].eq(1).all()


def test_concurrent_greedy_jobs_equal_generate_alone(engine, model):
    lengths = [5, 17, 9, 30, 2, 12]
    prompts = [prompt(n, seed) for seed, n in enumerate(lengths)]
    configs = [GenerationConfig(max_new_tokens=m, eos_token_id=None) for m in (7, 3, 20, 11, 16, 1)]
    waiters = [Waiter() for _ in prompts]
    for p, config, waiter in zip(prompts, configs, waiters, strict=True):
        engine.submit(Job("generate", p, waiter, config=config, stream=True))
    for p, config, waiter in zip(prompts, configs, waiters, strict=True):
        done = waiter.wait()
        assert isinstance(done, Done)
        expected = generate(model, [p], config)[0][0]
        assert done.generations[0].token_ids == expected.token_ids
        assert done.generations[0].finish_reason == "length"
        streamed = [row.token for event in waiter.events if isinstance(event, Step) for row in event.rows]
        assert streamed == expected.token_ids
    assert engine.stats.step_rows > engine.stats.steps  # several rows per step: they were batched


def test_late_joiners_with_longer_prompts_shift_the_batch(engine, model):
    """Jobs that join while others run (one with a longer prompt than the whole batch) still match generate."""
    config = GenerationConfig(max_new_tokens=24, eos_token_id=None)
    first, later = prompt(4, 10), [prompt(40, 11), prompt(3, 12)]
    late_waiters = [Waiter() for _ in later]

    class JoinAfter(Waiter):
        def __call__(self, event) -> None:
            super().__call__(event)
            if isinstance(event, Step) and len(self.events) == 5:  # submit from the worker thread mid-run
                for p, waiter in zip(later, late_waiters, strict=True):
                    engine.submit(Job("generate", p, waiter, config=config))

    waiter = JoinAfter()
    engine.submit(Job("generate", first, waiter, config=config, stream=True))
    for p, w in zip([first, *later], [waiter, *late_waiters], strict=True):
        assert w.wait().generations[0].token_ids == generate(model, [p], config)[0][0].token_ids


def test_sampling_with_seed_equals_sample_steps_alone(engine, model):
    """A seeded request draws from its own generator over its own rows: the numbers generate gives."""
    p = prompt(8, 20)
    config = GenerationConfig(
        max_new_tokens=15, do_sample=True, temperature=0.8, top_k=0, top_p=0.9, repetition_penalty=1.3, seed=7
    )
    noise = Waiter()
    engine.submit(Job("generate", prompt(20, 21), noise, config=config.replace(seed=1), rows=2))
    waiter = Waiter()
    engine.submit(Job("generate", p, waiter, config=config.replace(num_return_sequences=1), rows=3))
    expected = generate(model, [p], config.replace(num_return_sequences=3))[0]
    assert [g.token_ids for g in waiter.wait().generations] == [g.token_ids for g in expected]
    noise.wait()


def test_eos_and_logprobs(engine, model):
    p = prompt(6, 30)
    greedy = generate(model, [p], GenerationConfig(max_new_tokens=6, eos_token_id=None))[0][0].token_ids
    eos = greedy[2]  # make the third generated token the end token
    config = GenerationConfig(max_new_tokens=6, eos_token_id=eos)
    waiter = Waiter()
    engine.submit(Job("generate", p, waiter, config=config, logprobs=2, stream=True))
    done = waiter.wait()
    expected = generate(model, [p], config)[0][0]
    assert done.generations[0].token_ids == expected.token_ids and done.generations[0].finish_reason == "stop"
    rows = [row for event in waiter.events if isinstance(event, Step) for row in event.rows]
    assert [row.logprob for row in rows] == done.logprobs[0]
    with torch.no_grad():
        full = torch.log_softmax(model(torch.tensor([p + expected.token_ids])).float(), dim=-1)[0]
    for i, row in enumerate(rows):
        assert row.logprob.logprob == pytest.approx(float(full[len(p) - 1 + i, row.token]), abs=1e-4)
        assert row.logprob.top[0][0] == row.token and len(row.logprob.top) == 2  # greedy picks the best


def test_score_matches_the_model(engine, model):
    p = prompt(50, 40)
    waiter = Waiter()
    engine.submit(Job("score", p, waiter, logprobs=1))
    scored = waiter.wait()
    assert isinstance(scored, Scored) and scored.entries[0] is None
    with torch.no_grad():
        full = torch.log_softmax(model(torch.tensor([p])).float(), dim=-1)[0]
    for i in range(1, len(p)):
        assert scored.entries[i].logprob == pytest.approx(float(full[i - 1, p[i]]), abs=1e-5)


def test_beam_jobs_with_the_same_settings_run_together(model):
    engine = Engine(TextGenerator(model, FakeTokenizer()), max_batch=8)
    config = GenerationConfig(max_new_tokens=10, num_beams=4, early_stopping=True, num_return_sequences=2)
    prompts = [prompt(7, 50), prompt(13, 51)]
    waiters = [Waiter() for _ in prompts]
    for p, waiter in zip(prompts, waiters, strict=True):
        engine.submit(Job("beam", p, waiter, config=config))
    engine.start()  # both queued before the worker looks: one batch
    try:
        for p, waiter in zip(prompts, waiters, strict=True):
            expected = beam_search(model, [p], config)[0]
            assert [g.token_ids for g in waiter.wait().generations] == [g.token_ids for g in expected]
        assert engine.stats.beam_batches == 1
    finally:
        engine.close()


def test_cancel_frees_the_rows(engine):
    waiter = Waiter()
    job = Job("generate", prompt(5, 60), waiter, config=GenerationConfig(max_new_tokens=90, eos_token_id=None))
    engine.submit(job)
    deadline = time.monotonic() + 10
    while not any(isinstance(e, Step) for e in waiter.events) and time.monotonic() < deadline:
        time.sleep(0.001)
    job.cancel()
    while not engine.stats.cancelled and time.monotonic() < deadline:
        time.sleep(0.001)
    assert engine.running_rows == 0 and engine.stats.cancelled == 1
    assert engine.cache_rows == 0 and engine.cache_bytes == 0
    assert engine.stats.generated_tokens < 90
    assert not waiter.finished.is_set()  # nobody is told: the client is gone


def test_hang_ups_in_the_queue_and_mid_stream_leave_nothing_behind(model):
    """The soak's pattern in miniature (bench/serve_soak.py): of 12 jobs for 4 rows, a third hang up after their
    first token, a third while still queued; once the rest are done, no queue, no rows and no KV cache remain."""
    engine = Engine(TextGenerator(model, FakeTokenizer()), max_batch=4, max_queue=32)  # started below
    config = GenerationConfig(max_new_tokens=20, eos_token_id=None)
    waiters, jobs = [Waiter() for _ in range(12)], []
    for index, waiter in enumerate(waiters):
        job = Job("generate", prompt(4 + index, 80 + index), waiter, config=config, stream=True)
        if index % 3 == 0:
            job.emit = lambda event, job=job, waiter=waiter: (waiter(event), job.cancel())  # gone after one token
        engine.submit(job)
        jobs.append(job)
    for job in jobs[2::3]:
        job.cancel()  # gone before it started
    engine.start()
    try:
        for waiter in waiters[1::3]:
            assert isinstance(waiter.wait(), Done)
        deadline = time.monotonic() + 30
        while (engine.stats.cancelled < 8 or engine.cache_rows) and time.monotonic() < deadline:  # Done comes first
            time.sleep(0.001)
        assert engine.stats.cancelled == 8
        assert engine.queue_length == engine.running_jobs == engine.running_rows == engine.cache_rows == 0
        assert engine.cache_bytes == 0
        assert [len(w.events) for w in waiters[0::3]] == [1] * 4 and not any(w.events for w in waiters[2::3])
        assert engine.stats.generated_tokens == 4 * 20 + 4  # the hung-up ones stopped after their first token
    finally:
        engine.close()


def test_queue_full_and_timeout(model):
    engine = Engine(TextGenerator(model, FakeTokenizer()), max_batch=1, max_queue=2)  # not started: nothing runs
    config = GenerationConfig(max_new_tokens=4)
    waiters = [Waiter() for _ in range(2)]
    for waiter in waiters:
        engine.submit(Job("generate", prompt(3, 70), waiter, config=config, timeout=0.05))
    with pytest.raises(QueueFull):
        engine.submit(Job("generate", prompt(3, 70), Waiter(), config=config))
    time.sleep(0.1)
    engine.start()
    try:
        for waiter in waiters:
            failed = waiter.wait()
            assert isinstance(failed, Failed) and isinstance(failed.error, EngineTimeout)
        assert engine.stats.timeouts == 2
    finally:
        engine.close()


def test_render_messages_reuses_the_templates():
    history = [("Hi", "Hello!")]
    messages = [("user", "Hi"), ("assistant", "Hello!"), ("user", "How are you?")]
    for template in ("chat", "multialpaca", "plain"):
        assert render_messages(template, messages) == render_prompt(template, "How are you?", history)
    with_system = render_messages("chat", [("system", "Be brief."), ("user", "Hi")])
    assert with_system == render_prompt("chat", "Be brief.\nHi")
    with pytest.raises(Exception, match="end with a user message"):
        render_messages("chat", [("user", "Hi"), ("assistant", "Hello")])
