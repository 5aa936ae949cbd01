"""The real-stack replay benchmark (``benchmarks/replay.py``) on a tiny trace: it runs end to end.

Why in CI: the replay drives ``scalejob up`` and a plain ``celery worker`` through the same feeder
and sampler as the published figures; a change that breaks either (a spec key, the local
workers' registry, ``up``'s startup) should fail here, not on the next benchmark run. Only
correctness is asserted (every task ran once, workers were counted); speed is the benchmark's.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from benchmarks.replay import Options, Row, compress, plot, run_row, table

TINY = [(0.0, 1.0), (0.3, 1.5), (0.4, 0.5), (2.0, 1.0), (4.0, 0.5), (4.2, 0.8)]
OPTS = Options(max_workers=2, grace=1.0, window=0.5, finish_timeout=60.0, settle_cap=20.0)
FIELDS = {"row", "policy", "settings", "tasks", "finished", "lost", "ran_twice", "worker_seconds", "wait_p50", "wait_p95",
          "wait_max", "workers_started", "predicted_worker_seconds", "diff_pct", "timeline"}


def _check(row: Row) -> dict:
    assert row.tasks == len(TINY)
    assert row.finished == len(TINY), row
    assert row.lost == 0 and row.ran_twice == 0, row
    assert row.worker_seconds > 0 and row.workers_started >= 1, row
    assert 0 <= row.wait_p50 <= row.wait_p95 <= row.wait_max, row
    doc = json.loads(json.dumps(asdict(row)))
    assert doc.keys() >= FIELDS
    return doc


def test_compress_divides_arrivals_and_durations() -> None:
    assert compress([(20.0, 10.0), (200.0, 4.0), (400.0, 1.0)], 20, head=300) == [(1.0, 0.5), (10.0, 0.2)]


def test_replay_scalejob_and_fixed_pool(redis_base: str, tmp_path: Path) -> None:
    eas = run_row("eas", TINY, OPTS, redis_base)
    doc = _check(eas)
    assert doc["predicted_worker_seconds"] > 0 and doc["diff_pct"] is not None
    assert eas.worker_start_s is not None and eas.worker_start_s > 0
    fixed = run_row("fixed", TINY, OPTS, redis_base)
    _check(fixed)
    # a fixed pool of 2 is counted from the replay's start to its last task: 2 x that span
    assert abs(fixed.worker_seconds - 2 * fixed.span_s) < 0.5, fixed
    assert "fixed" in table([eas, fixed])
    assert plot([eas, fixed], tmp_path / "replay.png", "tiny").stat().st_size > 0
