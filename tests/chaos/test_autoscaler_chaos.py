"""Scenarios 2 and 4: scale-in churn and autoscaler crashes never interrupt, orphan or duplicate a worker.

Scaled for CI: the churn runs ~30 s (not 60 s): 5 waves of 20 waiting tasks with idle gaps of ~3 s
between them, min 0 / max 4, grace and stabilization windows short so scale-in happens every gap.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.autoscaling import Autoscalers, autoscaled_spec
from tests.chaos.conftest import Row, count_outcomes, interrupted, marked_command, settle
from tests.conftest import Stack
from tests.helpers import wait_for

MAX = 4
FAST_SCALE = {"onZero": {"scaleDownGracePeriodSeconds": 1}, "scaleDown": {"stabilizationWindowSeconds": 0.5}}


@contextmanager
def sample_workers(autoscalers: Autoscalers, service: str) -> Iterator[dict[str, int]]:
    """Sample live worker processes and registry entries every 0.1 s; yields the maxima seen."""
    seen = {"processes": 0, "registered": 0, "duplicate_names": 0}
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            names = [w.name for w in autoscalers.stack.workers(service)]
            seen["registered"] = max(seen["registered"], len(names))
            seen["duplicate_names"] += len(names) != len(set(names))
            seen["processes"] = max(seen["processes"], len(autoscalers.live_worker_pids(service)))
            stop.wait(0.1)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield seen
    finally:
        stop.set()
        t.join(5)


def actions(autoscalers: Autoscalers, service: str, prefix: str) -> list[str]:
    return [x for d in autoscalers.decisions(service) for x in d["actions"] if x.startswith(prefix)]


def finish(stack: Stack, autoscalers: Autoscalers, spec: object, ids: dict[str, str], row: Row) -> None:
    name = spec.name  # type: ignore[attr-defined]
    settle(stack, ids.values(), 60)
    attempts = count_outcomes(stack, name, ids.values(), row)
    cut = interrupted(stack.tmp / "data" / "storage" / name / "marks.txt", ids)
    row.interrupted = len(set(cut) | {t for t, rid in ids.items() if attempts[rid] != 1})
    if cut:
        row.notes.append(f"interrupted tags: {cut[:10]}")


def test_scale_in_churn(chaos: Stack, autoscalers: Autoscalers, row: Row) -> None:
    stack = chaos
    spec = stack.deploy(autoscaled_spec(stack, min=0, max=MAX, strategies={"avg_waiting_length": 5}, behavior=FAST_SCALE))
    autoscalers.wait_leader(autoscalers.start())
    ids: dict[str, str] = {}
    t0 = time.time()
    with sample_workers(autoscalers, spec.name) as seen:
        wave = 0
        while time.time() - t0 < 30:
            for i in range(20):
                tag = f"{wave}-{i}"
                ids[tag] = stack.put(spec, "command", marked_command(tag, 0.2 + 0.1 * (i % 5)))
            wait_for(lambda: all(stack.record(i).done for i in ids.values()), 60, interval=0.1, what=f"wave {wave}")
            time.sleep(3.0)  # idle gap: the autoscaler scales in (to zero after the 1 s grace)
            wave += 1
        finish(stack, autoscalers, spec, ids, row)
    scale_ins = len(actions(autoscalers, spec.name, "stop")) + len(actions(autoscalers, spec.name, "drain"))
    row.notes.append(f"{wave} waves in {time.time() - t0:.0f}s; scale-in actions: {scale_ins}; "
                     f"peak {seen['processes']} processes / {seen['registered']} registered (max {MAX})")
    row.duplicated += seen["duplicate_names"]
    assert seen["processes"] <= MAX and seen["registered"] <= MAX, seen
    assert scale_ins >= wave, f"only {scale_ins} scale-in actions over {wave} idle gaps"
    row.check()


def test_autoscaler_crash(chaos: Stack, autoscalers: Autoscalers, row: Row) -> None:
    stack = chaos
    spec = stack.deploy(autoscaled_spec(stack, min=0, max=3, strategies={"avg_waiting_length": 1}, behavior=FAST_SCALE))
    leader = autoscalers.start()
    autoscalers.wait_leader(leader)
    standby = autoscalers.start()
    ids: dict[str, str] = {}
    with sample_workers(autoscalers, spec.name) as seen:
        ids |= {f"up{i}": stack.put(spec, "command", marked_command(f"up{i}", 3)) for i in range(6)}
        wait_for(lambda: actions(autoscalers, spec.name, "spawn"), 10, interval=0.02, what="scale-up to begin")
        leader.signal(9)  # mid scale-up: the standby must finish it without doubling the workers
        autoscalers.wait_leader(standby, timeout=15)
        third = autoscalers.start()  # the next standby
        wait_for(lambda: all(stack.record(i).done for i in ids.values()), 60, interval=0.1, what="scale-up tasks")
        ids |= {f"tail{i}": stack.put(spec, "command", marked_command(f"tail{i}", 4)) for i in range(2)}
        n = len(actions(autoscalers, spec.name, "drain")) + len(actions(autoscalers, spec.name, "stop"))
        wait_for(lambda: len(actions(autoscalers, spec.name, "drain")) + len(actions(autoscalers, spec.name, "stop")) > n, 20,
                 interval=0.02, what="scale-in to begin")
        standby.signal(9)  # mid scale-in, while two tasks still run
        autoscalers.wait_leader(third, timeout=15)
        finish(stack, autoscalers, spec, ids, row)
        try:
            wait_for(lambda: not autoscalers.live_worker_pids(spec.name) and not stack.workers(spec.name), 30, interval=0.1,
                     what="scale to zero under the third autoscaler")
        except AssertionError as exc:
            state = {w.name: w.state for w in stack.workers(spec.name)}, autoscalers.live_worker_pids(spec.name), autoscalers.local()
            raise AssertionError(f"{exc}: registry/pids/local {state}; last decisions {autoscalers.decisions(spec.name)[-3:]}") from None
    orphans = autoscalers.live_worker_pids(spec.name)
    row.notes.append(f"peak {seen['processes']} processes / {seen['registered']} registered (max 3); "
                     f"spawned {len(actions(autoscalers, spec.name, 'spawn'))}; orphans {len(orphans)}")
    row.duplicated += seen["duplicate_names"] + max(0, seen["processes"] - 3) + len(orphans)
    assert third.alive() and seen["processes"] <= 3, seen
    row.check()
