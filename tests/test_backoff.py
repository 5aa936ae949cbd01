"""Crash-loop backoff schedule (app/core/backoff.py): a table of (failures, now) -> wait."""

from __future__ import annotations

import pytest

from app.core.backoff import BackoffConfig, delay, should_reset, wait_left

CFG = BackoffConfig(initial=1.0, cap=300.0, reset_after=60.0)


@pytest.mark.parametrize(("failures", "expected"), [(0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (9, 256.0), (10, 300.0), (500, 300.0)])
def test_delay_doubles_from_one_second_to_a_five_minute_cap(failures: int, expected: float) -> None:
    assert delay(failures, CFG) == expected


@pytest.mark.parametrize(("failures", "last", "now", "left"), [
    (0, None, 100.0, 0.0),  # never failed: spawn now
    (1, 100.0, 100.0, 1.0),
    (1, 100.0, 101.5, 0.0),  # the wait is over
    (3, 100.0, 101.0, 3.0),
    (12, 100.0, 150.0, 250.0),  # capped at 300 s
])
def test_wait_left_counts_from_the_last_failure(failures: int, last: float | None, now: float, left: float) -> None:
    assert wait_left(failures, last, now, CFG) == left


@pytest.mark.parametrize(("failures", "ready_since", "now", "reset"), [
    (0, 0.0, 100.0, False),  # nothing to reset
    (3, None, 100.0, False),  # no worker ready
    (3, 50.0, 100.0, False),  # ready 50 s: not yet
    (3, 40.0, 100.0, True),  # ready 60 s: the loop is over
])
def test_a_worker_ready_for_a_minute_resets_the_count(failures: int, ready_since: float | None, now: float, reset: bool) -> None:
    assert should_reset(failures, ready_since, now, CFG) is reset


def test_at_most_eight_starts_in_a_minute_even_when_each_fails_at_once() -> None:
    """The issue's bound: a worker that fails instantly is started at most 8 times in 60 s."""
    now, failures, starts = 0.0, 0, 0
    while now < 60.0:
        starts += 1  # start, fails at once
        failures += 1
        now += delay(failures, CFG)
    assert starts <= 8, starts


@pytest.mark.parametrize(("code", "output", "counts"), [
    (3, (), True),  # exited on its own
    (1, ("Traceback (most recent call last):", "ImportError: no module named x"), True),
    (-9, (), False),  # SIGKILLed from outside: replaced at once
    (None, ("scalejob worker svc: init command 'exit 7' exited with code 7:",), True),  # forked: no code, but it said why
    (None, ("celery@w ready.",), False),  # forked and killed: no word of its own
])
def test_only_a_worker_that_failed_by_itself_counts_toward_the_backoff(code: int | None, output: tuple[str, ...], counts: bool) -> None:
    from app.queue.health import failed_by_itself

    assert failed_by_itself("svc", code, output) is counts
