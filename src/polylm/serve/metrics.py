"""`GET /metrics`: Prometheus text format (version 0.0.4), written by hand, no client library needed.

HTTP-side counters live here (updated on the event loop); the engine's own counters (`EngineStats`) and
gauges are read at scrape time.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from polylm.serve.engine import Engine

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out = [
            f'{name}_bucket{{{labels}{sep}le="{_number(b)}"}} {c}'
            for b, c in zip(self.buckets, self.counts, strict=True)
        ]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        suffix = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{suffix} {self.sum:.6f}", f"{name}_count{suffix} {self.count}"]
        return out


class Metrics:
    """Request counts by endpoint and status, latencies, tokens, rejections."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = defaultdict(Histogram)
        self.first_token = Histogram()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.rejected: dict[str, int] = defaultdict(int)
        self.in_flight = 0

    def request_done(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(endpoint, status)] += 1
            self.latency[endpoint].observe(seconds)

    def tokens(self, prompt: int, completion: int) -> None:
        with self._lock:
            self.prompt_tokens += prompt
            self.completion_tokens += completion

    def reject(self, reason: str) -> None:
        with self._lock:
            self.rejected[reason] += 1

    def render(self, engine: Engine | None, loaded: bool) -> str:
        with self._lock:
            lines = [
                "# HELP polylm_requests_total HTTP requests by endpoint and status code.",
                "# TYPE polylm_requests_total counter",
            ]
            for (endpoint, status), count in sorted(self.requests.items()):
                lines.append(f'polylm_requests_total{{endpoint="{endpoint}",status="{status}"}} {count}')
            lines += [
                "# HELP polylm_request_duration_seconds Time from request to the end of the response.",
                "# TYPE polylm_request_duration_seconds histogram",
            ]
            for endpoint, histogram in sorted(self.latency.items()):
                lines += histogram.lines("polylm_request_duration_seconds", f'endpoint="{endpoint}"')
            lines += [
                "# HELP polylm_time_to_first_token_seconds Time from request to its first generated token.",
                "# TYPE polylm_time_to_first_token_seconds histogram",
                *self.first_token.lines("polylm_time_to_first_token_seconds"),
                "# HELP polylm_prompt_tokens_total Prompt tokens of answered requests.",
                "# TYPE polylm_prompt_tokens_total counter",
                f"polylm_prompt_tokens_total {self.prompt_tokens}",
                "# HELP polylm_completion_tokens_total Tokens returned to clients.",
                "# TYPE polylm_completion_tokens_total counter",
                f"polylm_completion_tokens_total {self.completion_tokens}",
                "# HELP polylm_rejected_requests_total Requests refused by a limit (queue_full, timeout).",
                "# TYPE polylm_rejected_requests_total counter",
            ]
            for reason, count in sorted(self.rejected.items()):
                lines.append(f'polylm_rejected_requests_total{{reason="{reason}"}} {count}')
            lines += [
                "# HELP polylm_requests_in_flight Requests being answered now.",
                "# TYPE polylm_requests_in_flight gauge",
                f"polylm_requests_in_flight {self.in_flight}",
            ]
        lines += [
            "# HELP polylm_model_loaded 1 once the model is loaded and the engine runs.",
            "# TYPE polylm_model_loaded gauge",
            f"polylm_model_loaded {int(loaded)}",
        ]
        if engine is not None:
            stats = engine.stats
            gauges = {
                "queue_length": ("Jobs waiting for a place in the batch.", engine.queue_length),
                "running_jobs": ("Jobs decoding in the batch now.", engine.running_jobs),
                "running_rows": ("Sequences (rows) decoding in the batch now.", engine.running_rows),
                "kv_cache_rows": ("Rows (sequence slots) held in the batch's KV cache.", engine.cache_rows),
                "kv_cache_bytes": ("Bytes of the batch's KV cache (keys and values).", engine.cache_bytes),
                "max_batch_rows": ("The batch's row limit (--max-batch).", engine.max_batch),
            }
            for name, (help_text, value) in gauges.items():
                lines += [f"# HELP polylm_{name} {help_text}", f"# TYPE polylm_{name} gauge", f"polylm_{name} {value}"]
            counters = {
                "engine_steps_total": ("Batched decoding steps.", stats.steps),
                "engine_step_rows_total": ("Rows decoded, summed over steps (/ steps = mean batch).", stats.step_rows),
                "prefill_tokens_total": ("Prompt tokens run through the model.", stats.prefill_tokens),
                "generated_tokens_total": ("Tokens generated by the engine.", stats.generated_tokens),
                "cancelled_jobs_total": ("Jobs dropped because their client went away.", stats.cancelled),
                "timed_out_jobs_total": ("Jobs dropped at the server's timeout.", stats.timeouts),
                "beam_batches_total": ("Beam-search batches run.", stats.beam_batches),
                "scored_prompts_total": ("Prompts scored for echo + logprobs.", stats.scored_prompts),
            }
            for name, (help_text, value) in counters.items():
                lines += [
                    f"# HELP polylm_{name} {help_text}",
                    f"# TYPE polylm_{name} counter",
                    f"polylm_{name} {value}",
                ]
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return f"{value:g}"
