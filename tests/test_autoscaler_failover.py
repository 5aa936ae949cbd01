"""Leader failover in the middle of a scale-up: spawns recorded before the fork, adopted, fenced, reaped.

The dead leader is played in-process (its Redis writes made, then its lock gone, as after a
SIGKILL and the TTL); the next leader is a real controller on real Redis and the real broker.
Workers are stand-in processes (``python -c sleep`` carrying ``--name NAME``, as a worker's
command line does) that never register, so the tests can also watch a spawn that never starts.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.autoscaling import autoscaled_spec
from tests.conftest import Stack
from tests.helpers import wait_for

MAX = 3


def stand_in(service: str, name: str, standby: bool) -> list[str]:
    """A process that looks like worker ``name`` of ``service``, never registers, and takes long to stop (SIGTERM ignored)."""
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
    return [sys.executable, "-c", code, "worker", service, "--name", name]


def ignores_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), 16)
    return bool(mask & (1 << (signal.SIGTERM - 1)))


def live(service: str) -> set[int]:
    """Pids of live stand-in workers of ``service`` (by command line: only this test's)."""
    out = set()
    for p in psutil.process_iter(["cmdline", "status"]):
        if f"--name {service}-" in " ".join(p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE:
            out.add(p.pid)
    return out


def leader(stack: Stack, start_timeout: float = 60.0) -> Any:
    """A new autoscaler that takes the lock (a new term) and adopts what the last one left, as ``serve`` does."""
    from app.core.settings import get_settings
    from autoscale.main import scalejob_autoscaler

    scaler = scalejob_autoscaler(get_settings(), fork=False)
    scaler.backend.command = stand_in
    scaler.backend.start_timeout = start_timeout
    scaler.backend.find_grace = 2.0
    assert scaler.leadership.hold()
    scaler.backend.adopt()
    return scaler


def tick(scaler: Any) -> list[dict[str, Any]]:
    """One loop turn of the leader, as ``Controller.run`` does it: renew the lock, then tick.

    The tick only queues its spawns and stops (autoscale/actions.py); waiting for them here
    lets each test look at the processes the turn left, as the next turn would."""
    assert scaler.leadership.hold()
    entries = scaler.controller.tick()
    assert scaler.controller.actions.settle(30), "the tick's actions did not finish"
    return entries


def die(scaler: Any, stack: Stack) -> None:
    """The leader is SIGKILLed: it writes nothing more, and its lock runs out."""
    from app.core import keys

    stack.r.delete(keys.autoscaler_lock())


@pytest.fixture
def service(stack: Stack) -> Any:
    spec = stack.deploy(autoscaled_spec(stack, min=0, max=MAX, strategies={"avg_waiting_length": 1}))
    for i in range(6):
        stack.put(spec, "command", f"echo {i}")
    yield spec
    for pid in live(spec.name):
        try:
            psutil.Process(pid).send_signal(signal.SIGKILL)
        except psutil.Error:
            pass


def spawns(entries: list[dict[str, Any]], service: str) -> list[str]:
    return [a for e in entries if e["service"] == service for a in e["actions"] if a.startswith("spawn ")]


def test_a_spawn_recorded_but_not_forked_counts_until_it_is_given_up_and_is_not_doubled(stack: Stack, service: Any) -> None:
    from app.core import keys
    from autoscale.backends.local import LocalProc

    old = leader(stack)
    name = f"{service.name}-deadbeef@{__import__('socket').gethostname()}"
    entry = LocalProc(name, service.name, 0, False, "", time.time(), start_by=time.time() + 60, term=old.leadership.term)
    old.leadership.write(keys.local_workers(), name, entry.record(), "spawn")  # recorded ...
    die(old, stack)  # ... and killed before the fork

    new = leader(stack)
    assert new.leadership.term > old.leadership.term
    assert [h.name for h in new.backend.list(service.name)] == [name], "the recorded spawn is adopted as capacity"
    assert len(spawns(tick(new), service.name)) == MAX - 1, "the new leader spawns only what is missing"
    assert len(live(service.name)) == MAX - 1
    # no process ever appears under that name: after find_grace the entry is given up and replaced, never doubled
    peak = 0

    def given_up_and_replaced() -> bool:
        nonlocal peak
        tick(new)
        peak = max(peak, len(live(service.name)), len(new.backend.list(service.name)))
        return name.encode() not in stack.r.hkeys(keys.local_workers()) and len(live(service.name)) == MAX

    wait_for(given_up_and_replaced, 10, interval=0.2, what="the unforked spawn to be given up and replaced")
    assert peak <= MAX and name not in {h.name for h in new.backend.list(service.name)}


def test_a_spawn_forked_but_not_recorded_with_its_pid_is_found_by_name_counted_and_reaped_if_it_never_registers(stack: Stack, service: Any) -> None:
    from app.core import keys
    from autoscale.backends.local import LocalProc

    old = leader(stack)
    name = f"{service.name}-0ddba11@{__import__('socket').gethostname()}"
    entry = LocalProc(name, service.name, 0, False, "", time.time(), start_by=time.time() + 4, term=old.leadership.term)
    old.leadership.write(keys.local_workers(), name, entry.record(), "spawn")
    orphan = subprocess.Popen(stand_in(service.name, name, False), start_new_session=True)  # forked ...
    die(old, stack)  # ... and killed before it wrote the pid

    new = leader(stack, start_timeout=4)
    [h] = new.backend.list(service.name)
    assert h.name == name and h.pid == orphan.pid, "the orphan is found by its name and adopted"
    assert len(spawns(tick(new), service.name)) == MAX - 1
    assert len(live(service.name)) == MAX, "never more than max processes"
    # it never registers: at its start deadline it is killed and its record dropped (no leak)
    wait_for(lambda: any(a.startswith(f"reap {name}") for e in tick(new) for a in e["actions"]), 10, interval=0.2, what="the reap")
    wait_for(lambda: orphan.poll() is not None, 5, what="the orphan to be killed")
    assert name.encode() not in stack.r.hkeys(keys.local_workers())


def test_a_leader_whose_term_is_over_cannot_spawn_or_stop(stack: Stack, service: Any) -> None:
    from autoscale.leader import Fenced

    old = leader(stack)
    [h] = [old.backend.spawn(service.name, {})]
    die(old, stack)
    new = leader(stack)
    assert new.leadership.term > old.leadership.term
    with pytest.raises(Fenced):
        old.backend.spawn(service.name, {})
    with pytest.raises(Fenced):
        old.backend.stop(h)
    assert old.leadership.refused == 2
    assert live(service.name) == {h.pid}, "the refused spawn forked nothing and the refused stop signalled nothing"
    # even if the old leader gets the lock again later, it is a new term: its old term's writes stay refused
    assert [x.name for x in new.backend.list(service.name)] == [h.name], "the new leader adopted the old one's worker"


def test_max_bounds_live_instances_so_a_worker_still_stopping_is_not_replaced_beside_it(stack: Stack, service: Any) -> None:
    """A new leader scaled in a worker in the gap between two tasks, then load came back: 4 processes for max 3."""
    scaler = leader(stack)
    assert len(spawns(tick(scaler), service.name)) == MAX
    [victim, *_] = scaler.backend.list(service.name)
    wait_for(lambda: ignores_sigterm(victim.pid), 10, what="the stand-in to install its SIGTERM handler")
    scaler.backend.stop(victim)  # told to stop; it finishes what it runs (here: ignores SIGTERM) and stays alive
    for _ in range(3):
        assert spawns(tick(scaler), service.name) == [], "no replacement while the stopping worker still runs"
    assert len(live(service.name)) == MAX
    psutil.Process(victim.pid).kill()  # it exits: now the replacement starts
    wait_for(lambda: spawns(tick(scaler), service.name), 5, interval=0.2, what="the replacement once the stopping worker is gone")
    assert len(live(service.name)) == MAX
