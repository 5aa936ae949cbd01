"""The wait-target rule: the fewest consuming workers that start every waiting task within the target.

Pure (standard library only), used by :func:`autoscale.policy.decide` when a spec sets
``autoscaler.strategies.target_wait_seconds`` instead of ``avg_waiting_length``.

Why a target and not a ratio: ``ceil(load / avg_waiting_length)`` cannot tell a queue of 100 s
tasks from a queue of 1 s tasks; the same ten waiting tasks mean a 10 s wait in one and a 1000 s
wait in the other. Users set the wait they accept; the rule turns it into a worker count with the
run times it has seen.

The model (FIFO queue, one task per worker, ``d`` = the estimated run time):

* a worker that is free at time ``a`` starts a task at ``a``, ``a + d``, ``a + 2d``, ... so by the
  aimed wait ``T`` it starts ``floor((T - a) / d) + 1`` tasks (none if ``a > T``);
* an idle worker is free at 0, a busy one when its task ends (``d`` minus what it has run, or one
  more ``d`` once it has outrun the estimate), a starting or a new one after the start time ``s``;
* the last waiting task starts within ``T`` when the workers' starts by ``T`` cover the queue.

Busy workers are always kept (a drained busy worker still holds its slot until its task ends).
Idle and starting ones are kept while needed, best first, then new ones are added. When a new
worker cannot start a task within ``T`` at all (``s >= T``), each waiting task beyond what the
present workers cover gets its own worker: that is the least wait there is.

``T`` is ``AIM`` times the target: the queue grows between ticks and run times scatter around
their mean, so aiming at the target itself misses it about half the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

AIM = 0.8  # fraction of the target the last waiting task is aimed at (headroom for scatter; benchmarks/simulate.py)
KEEP_IDLE = 0.4  # an idle worker is kept for this fraction of a worker start time before it goes
PRIOR_START = 5.0  # worker start seconds assumed until the controller has measured one


@dataclass(frozen=True)
class RunTimes:
    """What the controller knows about a service's recent run times (autoscale/durations.py)."""

    mean: float  # seconds, over the recent finished tasks
    p90: float
    count: int  # how many finished tasks the figures come from (0: none yet)


def estimate(run: RunTimes | None, elapsed: list[float]) -> float | None:
    """The run time to plan with, or None when nothing has finished yet.

    The mean of recent finished tasks, raised to the median age of the tasks running now: when
    durations shift from short to long, the running tasks show it long before they finish.
    """
    if run is None or run.count <= 0:
        return None
    d = run.mean
    if elapsed:
        ages = sorted(elapsed)
        d = max(d, ages[len(ages) // 2])
    return max(d, 1e-3)


def starts_by(free_at: float, horizon: float, d: float) -> int:
    """Tasks one worker free at ``free_at`` starts by ``horizon`` when each runs ``d`` seconds."""
    if free_at > horizon:
        return 0
    return math.floor((horizon - free_at) / d) + 1


def residual(age: float, d: float) -> float:
    """Seconds until a task that has run ``age`` seconds ends: the rest of ``d``, else one more ``d``."""
    return d - age if age < d else d


@dataclass(frozen=True)
class Pool:
    """The consuming workers as the rule sees them."""

    busy_ages: tuple[float, ...]  # how long each busy worker's task has run
    idle: int
    starting: int


def workers_for_target(waiting: int, pool: Pool, run: RunTimes | None, start: float, target: float) -> tuple[int, str]:
    """(desired consuming workers, reason) for ``waiting`` tasks and ``pool``; see the module docstring."""
    busy = len(pool.busy_ages)
    d = estimate(run, list(pool.busy_ages))
    if d is None:  # nothing finished yet: one worker per task (avg_waiting_length 1)
        why = f"no run times yet, one worker per task: {busy} running + {waiting} waiting"
        return busy + waiting, f"target wait {target:g} s: {why}"
    horizon = AIM * target
    covered = sum(starts_by(residual(a, d), horizon, d) for a in pool.busy_ages)
    n = busy
    spare = [starts_by(0.0, horizon, d)] * pool.idle + [starts_by(start, horizon, d)] * pool.starting
    for cap in spare:
        if covered >= waiting:
            break
        n, covered = n + 1, covered + cap
    per_new = starts_by(start, horizon, d)
    short = max(waiting - covered, 0)
    added = short if per_new == 0 else math.ceil(short / per_new)
    n += added
    why = (
        f"target wait {target:g} s (aim {horizon:g} s): waiting {waiting}, running {busy}, run time ~{d:.3g} s "
        f"({run.count if run else 0} seen), start {start:.3g} s; present workers start {covered} by then"
        + (f", +{added} new start {per_new} each" if added else "")
        + f" -> {n}"
    )
    return n, why


def summarize(samples: list[float]) -> RunTimes | None:
    """The figures of recent run times (the controller and the simulator both call this)."""
    if not samples:
        return None
    xs = sorted(samples)
    return RunTimes(mean=sum(xs) / len(xs), p90=xs[min(int(0.9 * len(xs)), len(xs) - 1)], count=len(xs))
