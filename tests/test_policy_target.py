"""The wait-target rule (``strategies.target_wait_seconds``), table-driven: the math, then the policy around it.

Every expected count is worked out in the case's comment with the rule of autoscale/target_wait.py:
a worker free at ``a`` starts ``floor((T - a) / d) + 1`` tasks by the aimed wait ``T`` (AIM x target).
"""

from __future__ import annotations

import pytest

from app.core.specs import parse_spec
from autoscale.config import from_spec
from autoscale.policy import AutoscalerConfig, Observation, PolicyState, RunTimes, WorkerView, decide
from autoscale.target_wait import AIM, KEEP_IDLE, PRIOR_START, Pool, estimate, starts_by, workers_for_target

assert AIM == 0.8  # the cases below are worked out for it


def run(mean: float, count: int = 20) -> RunTimes:
    return RunTimes(mean=mean, p90=mean * 1.5, count=count)


# (waiting, pool, run times, start s, target s) -> desired consuming workers
CASES: dict[str, tuple[int, Pool, RunTimes | None, float, float, int]] = {
    "no run times yet: one worker per task": (5, Pool((0.0,), 0, 0), None, 1.0, 10.0, 6),
    # T = 8: an idle worker starts 8/2 + 1 = 5, a new one (free at 1) 3 + 1 = 4: 20 - 2*5 = 10 -> 3 new
    "short tasks: a few workers drain a long queue": (20, Pool((), 2, 0), run(2.0), 1.0, 10.0, 5),
    # T = 48 < d: every worker starts one task by then; busy ones (residual 150) none
    "long tasks: one new worker per waiting task": (6, Pool((0.0, 0.0), 0, 0), run(150.0), 20.0, 60.0, 8),
    # start 60 > T 48: no new worker can start a task within the target; still one each, the least wait
    "start longer than the target: one per task": (3, Pool((), 0, 0), run(5.0), 60.0, 60.0, 3),
    # T = 24, d = 10 (median age 9 < 10): residuals 10 and 1 -> 2 + 3 starts >= 3 waiting
    "busy workers cover the queue: no more": (3, Pool((0.0, 9.0), 0, 0), run(10.0), 5.0, 30.0, 2),
    # idle workers are kept only while needed: one idle starts 24/10 + 1 = 3 >= 3
    "idle workers beyond the need go": (3, Pool((), 4, 0), run(10.0), 5.0, 30.0, 1),
    "an empty queue keeps the busy workers only": (0, Pool((1.0, 2.0), 3, 1), run(10.0), 5.0, 30.0, 2),
    # a starting worker counts like a new one: free at s = 5 -> floor(19/10) + 1 = 2; 5 waiting -> 1 starting + 2 new
    "starting workers count before new ones": (5, Pool((), 0, 1), run(10.0), 5.0, 30.0, 3),
    # the mean says 3 s, but the running tasks are 100-200 s old: plan with their median, d = 120 > T = 48;
    # only the 100 s one ends in time (residual 20 -> 1 start): 3 new, one task each
    "running tasks outgrow a stale estimate": (4, Pool((100.0, 120.0, 200.0), 0, 0), run(3.0), 20.0, 60.0, 6),
}


@pytest.mark.parametrize(("waiting", "pool", "times", "start", "target", "want"), list(CASES.values()), ids=list(CASES))
def test_workers_for_target(waiting: int, pool: Pool, times: RunTimes | None, start: float, target: float, want: int) -> None:
    n, why = workers_for_target(waiting, pool, times, start, target)
    assert n == want, why
    assert f"target wait {target:g} s" in why


def test_starts_by_and_estimate() -> None:
    assert [starts_by(a, 10.0, 3.0) for a in (0.0, 1.0, 10.0, 10.5)] == [4, 4, 1, 0]
    assert estimate(None, [5.0]) is None and estimate(RunTimes(1, 1, 0), []) is None
    assert estimate(run(4.0), [1.0, 2.0]) == 4.0
    assert estimate(run(4.0), [10.0, 30.0, 50.0]) == 30.0


TARGET = AutoscalerConfig(min=0, max=20, target_wait_seconds=30, stabilization=1, scale_down_grace=10)


def obs(waiting: int, busy: int = 0, idle: int = 0, start: float | None = 2.0, mean: float = 10.0, now: float = 0.0) -> Observation:
    views = tuple(WorkerView(f"b{i}", "busy", busy_since=now) for i in range(busy)) + tuple(WorkerView(f"i{i}", "idle") for i in range(idle))
    return Observation(waiting, busy, views, run_times=run(mean), start_seconds=start)


def test_policy_scales_to_the_target_and_in_after_part_of_a_start_time() -> None:
    # T = 24, d = 10, s = 5: a new worker starts floor(19/10) + 1 = 2 tasks; 30 waiting -> 15 workers
    d, state = decide(obs(30, start=5), PolicyState(), TARGET, 0.0)
    assert (d.desired, d.rule) == (15, "scale_up")
    # the queue is gone, 2 still busy: the window is max(stabilization 1 s, KEEP_IDLE x start 5 s)
    assert KEEP_IDLE * 5 == 2
    d, state = decide(obs(0, busy=2, idle=13, start=5, now=1.5), state, TARGET, 1.5)
    assert (d.desired, d.rule) == (15, "stabilization") and "2 s stabilization window" in d.reason
    d, state = decide(obs(0, busy=2, idle=13, start=5, now=2.5), state, TARGET, 2.5)
    assert d.desired == 2 and len(d.victims) == 13 and all(v.startswith("i") for v in d.victims)


def test_policy_keeps_one_for_the_grace_then_zero() -> None:
    state = PolicyState(current=1)
    d, state = decide(obs(0, idle=1), state, TARGET, 0.0)
    assert (d.desired, d.rule) == (1, "grace")
    d, state = decide(obs(0, idle=1), state, TARGET, 10.0)
    assert (d.desired, d.rule) == (0, "to_zero")


def test_policy_without_a_measured_start_uses_the_prior() -> None:
    d, _ = decide(obs(30, start=None), PolicyState(), TARGET, 0.0)
    per_new = starts_by(PRIOR_START, AIM * 30, 10.0)
    assert d.desired == -(-30 // per_new) and f"start {PRIOR_START:g} s" in d.reason


def test_policy_clamps_to_max() -> None:
    d, _ = decide(obs(500), PolicyState(), TARGET, 0.0)
    assert (d.desired, d.rule) == (20, "clamp_max")


def test_config_from_spec_reads_the_target() -> None:
    spec = parse_spec({"metadata": {"name": "svc"}, "autoscaler": {"max": 5, "strategies": {"target_wait_seconds": 45}}})
    cfg = from_spec(spec)
    assert (cfg.target_wait_seconds, cfg.max) == (45, 5)
    assert from_spec(parse_spec({"metadata": {"name": "svc"}})).target_wait_seconds is None
