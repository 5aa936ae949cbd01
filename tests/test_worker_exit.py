"""A dead worker's job runs again at once when the local backend owns it, within the lease TTL otherwise.

The local backend watches each worker's process (a pidfd) and, once it and every command it
started are gone, the autoscaler requeues what it held: no waiting for the lease TTL. A worker no
backend owns (started by hand, on another host) keeps the lease TTL, here set to its 2 s floor.
Real Redis, a real broker, real worker processes and real SIGKILLs; each job's first run hangs and
its second run ends, and the second run checks that nothing of the first still runs.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.autoscaling import Autoscalers, autoscaled_spec, autoscalers  # noqa: F401 - fixture
from tests.conftest import Stack
from tests.helpers import wait_for

DEFAULT_TTL = 5.0  # SCALEJOB_HEARTBEAT_TTL left at its default for the local-backend test


def hang_first(marks: Path, token: str) -> str:
    """First run: note the start, hang in ``sleep`` (its pid noted). Second run: note whether that sleep still runs, end."""
    f = marks / token
    return (f"echo $(date +%s.%N) >> {f}.starts; if [ -f {f}.sleep ]; then kill -0 $(cat {f}.sleep) 2>/dev/null && touch {f}.overlap; exit 0; fi; "
            f"sleep 300 & echo $! > {f}.sleep; wait")


def second_start(marks: Path, token: str, timeout: float) -> float:
    def read() -> float | None:
        path = marks / f"{token}.starts"
        lines = path.read_text().split() if path.exists() else []
        return float(lines[1]) if len(lines) >= 2 else None

    return wait_for(read, timeout, interval=0.02, what=f"job {token} to start again")


def ran_once_more(stack: Stack, service: str, rid: str, marks: Path, token: str) -> None:
    """The job succeeded on its second attempt, once, and its first copy was gone before the second ran."""
    rec = stack.wait_done(rid, 30)
    assert rec.state == "succeeded" and rec.attempts == 2, (rec.state, rec.attempts, rec.error)
    results = [m for m in stack.sink(service) if m.tags.get("requestId") == rid and m.tags["type"] == "result"]
    assert len(results) == 1, results
    assert not (marks / f"{token}.overlap").exists(), "the second run started while the first one's command still ran"


def test_a_local_worker_sigkilled_mid_task_has_its_job_running_again_well_before_the_lease_ttl(stack: Stack, autoscalers: Autoscalers) -> None:
    spec = stack.deploy(autoscaled_spec(stack, min=2, max=2))
    autoscalers.wait_leader(autoscalers.start())
    stack.wait_workers(spec.name, 2, "idle", timeout=60)
    marks = stack.tmp / "marks"
    marks.mkdir()
    rid = stack.put(spec, "command", hang_first(marks, "a"))
    wait_for((marks / "a.sleep").exists, 20, what="the first run")
    holder = next(w for w in stack.workers(spec.name) if w.name == stack.record(rid).worker)

    psutil.Process(holder.pid).send_signal(signal.SIGKILL)  # the worker alone: its reaper ends the command
    killed = time.time()
    again = second_start(marks, "a", DEFAULT_TTL) - killed
    assert again < DEFAULT_TTL / 2, f"the job ran again {again:.2f}s after the kill: the lease TTL ({DEFAULT_TTL}s), not the exit, released it"
    ran_once_more(stack, spec.name, rid, marks, "a")
    wait_for(lambda: holder.name not in {w.name for w in stack.workers(spec.name)}, 5, what="the dead worker's registry entry to go")


TTL_ENV = {"SCALEJOB_HEARTBEAT_TTL": "2"}  # the floor; the heartbeat interval is derived (0.5 s)


def test_a_lease_ttl_of_2s_recovers_a_worker_no_backend_owns_and_keeps_a_task_longer_than_it(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec())
    names = [f"{spec.name}-{i}@test" for i in range(3)]
    procs = {n: stack.start_worker(spec.name, name=n, env=TTL_ENV) for n in names}
    stack.wait_workers(spec.name, 3, "idle", timeout=60)
    marks = stack.tmp / "marks"
    marks.mkdir()
    long_rid = stack.put(spec, "command", "sleep 5; echo kept")  # 2.5 TTLs on a live worker: its lease must be renewed
    wait_for(lambda: stack.record(long_rid).state == "running", 20, what="the long task to start")
    rid = stack.put(spec, "command", hang_first(marks, "b"))
    wait_for((marks / "b.sleep").exists, 20, what="the first run")
    holder = stack.record(rid).worker

    for p in procs[holder].tree():  # the whole worker tree, as an OOM kill of its container does
        p.kill()
    killed = time.time()
    again = second_start(marks, "b", 10) - killed
    assert again < 2.0 + 2.0, f"the job ran again {again:.2f}s after the kill, past a 2 s lease TTL and a beat or two"
    ran_once_more(stack, spec.name, rid, marks, "b")
    kept = stack.wait_done(long_rid, 20)
    assert kept.state == "succeeded" and kept.attempts == 1 and "kept" in kept.result["tail"]


def test_the_lease_ttl_has_a_floor_and_a_heartbeat_that_keeps_up() -> None:
    from pydantic import ValidationError

    from app.core.settings import Settings

    assert Settings(heartbeat_ttl=2).heartbeat_interval == 0.5
    assert Settings(heartbeat_ttl=5).heartbeat_interval == 1.0  # the old default pair
    with pytest.raises(ValidationError, match="greater than or equal to 2"):
        Settings(heartbeat_ttl=1)
    with pytest.raises(ValidationError, match="at most a third of SCALEJOB_HEARTBEAT_TTL"):
        Settings(heartbeat_ttl=3, heartbeat_interval=1.5)
