"""Scenario 3: restart the Redis (broker + state, AOF with appendfsync always) in the middle of a run.

It uses its own embedded Redis (app/core/embedded.py) on a pinned port, never the machine's Redis: every
request that got a 200 still completes, and the API, the workers and the autoscaler reconnect by
themselves (same pids before and after). 503s while Redis is down are the correct answer ("try
again"), counted apart from the must-be-0 5xx column.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from app.core.embedded import _alive, ensure_embedded, stop_embedded
from tests.apiserver import ApiServer
from tests.autoscaling import Autoscalers, autoscaled_spec
from tests.chaos.conftest import FAST, Row, count_outcomes, interrupted, marked_command, settle
from tests.conftest import Stack, reset_caches
from tests.helpers import wait_for


def test_broker_restart(tmp_path: Path, row: Row, monkeypatch: pytest.MonkeyPatch) -> None:
    server = ensure_embedded(tmp_path / "broker", appendfsync="always")
    stack = Stack(tmp_path, server.url, server.url, f"sjt{uuid.uuid4().hex[:8]}")
    stack.env.update(FAST)
    for k in ("SCALEJOB_REDIS_URL", "SCALEJOB_BROKER_URL", "SCALEJOB_KEY_PREFIX", "SCALEJOB_DATA_DIR"):
        monkeypatch.setenv(k, stack.env[k])
    reset_caches()
    autoscalers = Autoscalers(stack)
    try:
        _run(stack, autoscalers, server, row)
    finally:
        autoscalers.close()
        stack.close()
        stop_embedded(server)
        reset_caches()


def _run(stack: Stack, autoscalers: Autoscalers, server: object, row: Row) -> None:
    spec = stack.deploy(autoscaled_spec(stack, min=2, max=2))
    api = ApiServer(stack)
    scaler = autoscalers.start()
    autoscalers.wait_leader(scaler)
    stack.wait_workers(spec.name, 2, "idle", timeout=60)
    pids = {"api": api.proc.pid, "autoscaler": scaler.pid, "workers": autoscalers.live_worker_pids(spec.name)}  # type: ignore[union-attr]

    ids: dict[str, str] = {}
    refused: list[tuple[float, str]] = []
    stop = threading.Event()

    def load() -> None:
        i = 0
        with api.client(timeout=10) as http:
            while not stop.is_set():
                tag = str(i)
                try:
                    resp = http.post(f"/api/predict/{spec.name}", params={"taskType": "command"}, content=marked_command(tag, 0.3).encode())
                except httpx.HTTPError as exc:
                    refused.append((time.time(), type(exc).__name__))
                else:
                    if resp.status_code == 200:
                        ids[tag] = resp.headers["X-Eas-Queueservice-Request-Id"]
                    elif resp.status_code == 503:
                        refused.append((time.time(), "503"))
                    else:
                        row.five_xx += resp.status_code >= 500
                        refused.append((time.time(), str(resp.status_code)))
                i += 1
                time.sleep(0.1)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    wait_for(lambda: len(ids) >= 15, 30, what="some accepted requests before the restart")
    down = time.time()
    stop_embedded(server)  # type: ignore[arg-type]
    wait_for(lambda: not _alive(server.port), 10, what="redis to be down")  # type: ignore[attr-defined]
    time.sleep(1.5)
    up = time.time()
    again = ensure_embedded(server.directory.parent, appendfsync="always", port=server.port)  # type: ignore[attr-defined]
    assert again.port == server.port  # type: ignore[attr-defined]
    accepted_before = len(ids)
    wait_for(lambda: len(ids) >= accepted_before + 15, 45, interval=0.2, what="requests accepted again after the restart")
    stop.set()
    loader.join(15)

    settle(stack, ids.values(), 60)
    attempts = count_outcomes(stack, spec.name, ids.values(), row)
    cut = interrupted(stack.tmp / "data" / "storage" / spec.name / "marks.txt", ids)
    after = {"api": api.proc.pid, "autoscaler": scaler.pid, "workers": autoscalers.live_worker_pids(spec.name)}  # type: ignore[union-attr]
    last_refused = max((t for t, _ in refused), default=up)
    row.notes.append(f"redis down {up - down:.1f}s; puts refused until {last_refused - up:.1f}s after it was back "
                     f"({len(refused)}: {sorted({c for _, c in refused})}); "
                     f"ran twice: {sum(a > 1 for a in attempts.values())}; cut: {len(cut)}")
    assert api.proc.alive() and scaler.alive() and after == pids, (pids, after)  # type: ignore[union-attr]
    assert len([w for w in stack.workers(spec.name)]) == 2
    row.check()

