"""The issue's soak, two minutes long: 64 streaming `openai` clients against a `polylm serve` process, a third of
them hanging up mid-stream (bench/serve_soak.py runs the same `soak` for ten minutes; figures in
docs/benchmarks.md)."""

from __future__ import annotations

import os
import sys

import pytest

from conftest import REPO
from serve_support import make_model_dir

sys.path.insert(0, str(REPO / "bench"))  # bench/ is not a package: its scripts import `_machine` as a module
from serve_soak import failures, soak


@pytest.mark.slow
def test_soak_streaming_clients_with_hang_ups(tmp_path, corpus_tokenizer):
    """No errors besides the clients' own cancellations, flat memory after the warm-up, the queue and the KV cache
    empty once the load stops, and hung-up streams really cancelled in the engine (not run to the end)."""
    model_dir = make_model_dir(tmp_path / "tiny", corpus_tokenizer)
    seconds = float(os.environ.get("POLYLM_SERVE_SOAK_SECONDS", "120"))
    result = soak(model_dir, clients=64, seconds=seconds, progress=print)
    summary = {k: v for k, v in result.items() if k != "timeline"}
    assert failures(result) == [], summary
    assert result["cancelling_clients"] == 22 and result["cancelled"] > 0
    assert result["server_cancelled_jobs"] >= result["cancelled"] // 2, summary
    print(
        f"\n{result['requests']} requests ({result['cancelled']} hung up), 0 errors, p99 "
        f"{result['latency_p99_seconds']:.2f} s, RSS {result['rss_after_warmup_mib']:.0f} -> "
        f"{result['rss_end_mib']:.0f} MiB"
    )
