"""Spawns and stops happen off the decision loop, counted from the moment they are decided.

An in-process leader on real Redis and the real broker; its workers are stand-in processes (as in
test_autoscaler_failover.py). The backend's spawn is held on a gate the test opens, so a tick
that returns while the gate is shut proves the loop did not wait for the fork, without timing it.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.conftest import Stack
from tests.test_autoscaler_failover import MAX, die, leader, live, service, spawns  # noqa: F401 - fixture


def gated(scaler: Any) -> threading.Event:
    """Hold every spawn of ``scaler``'s backend until the returned event is set."""
    gate, spawn = threading.Event(), scaler.backend.spawn

    def held(svc: str, env: dict[str, str]) -> Any:
        assert gate.wait(30), "the test never opened the gate"
        return spawn(svc, env)

    scaler.backend.spawn = held
    return gate


def test_a_tick_queues_its_spawns_and_the_next_tick_counts_them_instead_of_spawning_again(stack: Stack, service: Any) -> None:
    scaler = leader(stack)
    gate = gated(scaler)
    assert scaler.leadership.hold()
    [first] = [e for e in scaler.controller.tick() if e["service"] == service.name]
    assert len(spawns([first], service.name)) == MAX  # decided and queued; the forks wait on the gate
    assert live(service.name) == set()
    for _ in range(3):  # while they are held: counted as starting, never spawned twice, max kept
        [entry] = [e for e in scaler.controller.tick() if e["service"] == service.name]
        assert spawns([entry], service.name) == [] and entry["inputs"]["workers"] == {"starting": MAX}, entry
    gate.set()
    assert scaler.controller.actions.settle(30)
    assert len(live(service.name)) == MAX and len(scaler.backend.list(service.name)) == MAX
    [entry] = [e for e in scaler.controller.tick() if e["service"] == service.name]
    assert spawns([entry], service.name) == [] and entry["inputs"]["workers"] == {"starting": MAX}, entry


def test_a_queued_spawn_whose_term_ended_forks_nothing_and_the_leader_stands_by(stack: Stack, service: Any) -> None:
    from autoscale.leader import Fenced

    old = leader(stack)
    gate = gated(old)
    assert old.leadership.hold()
    assert len(spawns(old.controller.tick(), service.name)) == MAX
    die(old, stack)
    new = leader(stack)  # a newer term begins while the old leader's spawns wait to run
    gate.set()
    assert old.controller.actions.settle(30)
    assert live(service.name) == set() and old.backend.list(service.name) == [], "a spawn of an ended term forked"
    assert old.leadership.refused >= 1
    with pytest.raises(Fenced):  # the refusal stops the old leader at its next tick, as an inline one did
        old.controller.tick()
    assert new.backend.list(service.name) == []
