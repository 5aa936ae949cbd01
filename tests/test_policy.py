"""The autoscaling policy, table-driven: every case is a sequence of ticks with time passed in."""

from __future__ import annotations

import pytest

from app.core.specs import parse_spec
from autoscale.config import from_spec
from autoscale.policy import (
    AutoscalerConfig,
    Decision,
    Observation,
    PolicyState,
    WorkerView,
    choose_victims,
    decide,
)

# One tick: (now, waiting, running) -> expected desired. Each case starts from PolicyState().
Tick = tuple[float, int, int, int]


def run_ticks(cfg: AutoscalerConfig, ticks: list[Tick], state: PolicyState | None = None) -> list[Decision]:
    state = state or PolicyState()
    out = []
    for now, waiting, running, want in ticks:
        d, state = decide(Observation(waiting, running, ()), state, cfg, now)
        assert d.desired == want, f"t={now} waiting={waiting} running={running}: {d}"
        out.append(d)
    return out


CASES: dict[str, tuple[AutoscalerConfig, list[Tick]]] = {
    "ceil of load over avg_waiting_length": (
        AutoscalerConfig(min=1, max=10, avg_waiting_length=2),
        [(0, 5, 2, 4), (0.5, 6, 2, 4), (1.0, 7, 2, 5)],
    ),
    "scale-up from zero is immediate": (
        AutoscalerConfig(min=0, max=4, scale_down_grace=3),
        [(0, 0, 0, 0), (0.1, 1, 0, 1), (0.2, 10, 0, 4)],
    ),
    "clamped to max": (AutoscalerConfig(min=0, max=3), [(0, 100, 0, 3)]),
    "clamped to min": (AutoscalerConfig(min=2, max=5), [(0, 0, 0, 2), (5, 1, 0, 2)]),
    "scale-down waits for the stabilization window": (
        AutoscalerConfig(min=1, max=10, stabilization=10),
        [(0, 8, 0, 4), (1, 2, 0, 4), (9.9, 2, 0, 4), (10.5, 2, 0, 1)],
    ),
    "scale-down takes the highest desired within the window": (
        AutoscalerConfig(min=1, max=10, stabilization=5),
        [(0, 10, 0, 5), (2, 6, 0, 5), (4, 2, 0, 5), (5.5, 2, 0, 3), (7.5, 2, 0, 1)],
    ),
    "zero stabilization window scales down at once": (
        AutoscalerConfig(min=1, max=10, stabilization=0),
        [(0, 8, 0, 4), (0.5, 2, 0, 1)],
    ),
    "to zero only after the grace period of zero load": (
        AutoscalerConfig(min=0, max=4, stabilization=0, scale_down_grace=3),
        [(0, 4, 0, 2), (1, 0, 0, 1), (3.9, 0, 0, 1), (4.0, 0, 0, 0), (5, 0, 0, 0)],
    ),
    "load during the grace period restarts it": (
        AutoscalerConfig(min=0, max=4, stabilization=0, scale_down_grace=3),
        [(0, 2, 0, 1), (1, 0, 0, 1), (3, 0, 1, 1), (4, 0, 0, 1), (6.9, 0, 0, 1), (7.0, 0, 0, 0)],
    ),
    "min 1 never goes to zero": (
        AutoscalerConfig(min=1, max=4, stabilization=0, scale_down_grace=0),
        [(0, 4, 0, 2), (1, 0, 0, 1), (100, 0, 0, 1)],
    ),
    "grace 0 goes to zero on the first idle tick": (
        AutoscalerConfig(min=0, max=4, stabilization=0, scale_down_grace=0),
        [(0, 1, 0, 1), (0.5, 0, 0, 0)],
    ),
    "scale-up rate limit": (
        AutoscalerConfig(min=0, max=20, scale_up_step=2),
        [(0, 20, 0, 2), (0.5, 20, 0, 4), (1.0, 20, 0, 6)],
    ),
    "scale-down rate limit": (
        AutoscalerConfig(min=0, max=20, stabilization=0, scale_down_step=3, scale_down_grace=0),
        [(0, 20, 0, 10), (0.5, 0, 0, 7), (1.0, 0, 0, 4), (1.5, 0, 0, 1), (2.0, 0, 0, 0)],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_policy_table(name: str) -> None:
    cfg, ticks = CASES[name]
    run_ticks(cfg, ticks)


@pytest.mark.parametrize(
    ("cfg", "waiting", "running", "rule"),
    [
        (AutoscalerConfig(min=0, max=3), 100, 0, "clamp_max"),
        (AutoscalerConfig(min=2, max=3), 0, 0, "clamp_min"),
        (AutoscalerConfig(min=0, max=10), 3, 0, "scale_up"),
        (AutoscalerConfig(min=0, max=10, scale_up_step=1), 9, 0, "rate_limit"),
    ],
)
def test_rule_names_the_constraint_that_bound(cfg: AutoscalerConfig, waiting: int, running: int, rule: str) -> None:
    d, _ = decide(Observation(waiting, running, ()), PolicyState(), cfg, 0.0)
    assert d.rule == rule


def test_reason_carries_the_inputs() -> None:
    d, _ = decide(Observation(5, 2, ()), PolicyState(), AutoscalerConfig(), 0.0)
    assert d.reason.startswith("load 7 (waiting 5 + running 2) / avg_waiting_length 2 -> 4")
    assert d.rule == "scale_up"


def test_rules_over_a_scale_down_to_zero() -> None:
    cfg = AutoscalerConfig(min=0, max=4, stabilization=2, scale_down_grace=3)
    ds = run_ticks(cfg, [(0, 6, 0, 3), (1, 0, 0, 3), (2.5, 0, 0, 1), (4.5, 0, 0, 0)])
    assert [d.rule for d in ds] == ["scale_up", "stabilization", "grace", "to_zero"]
    assert "grace 3 s" in ds[2].reason


def test_history_keeps_only_the_window() -> None:
    cfg = AutoscalerConfig(stabilization=5)
    state = PolicyState()
    for t in range(100):
        _, state = decide(Observation(1, 0, ()), state, cfg, float(t))
    assert len(state.history) <= 6


def gpu_workers(n: int, state: str = "idle") -> tuple[WorkerView, ...]:
    return tuple(WorkerView(f"w{i}", state, gpu_util=10.0) for i in range(n))


@pytest.mark.parametrize(
    ("gpu_per_worker", "free", "workers", "waiting", "want", "rule"),
    [
        (1, 2, 0, 10, 2, "gpu_cap"),  # 2 free GPUs, none held: 2 workers
        (2, 5, 0, 10, 2, "gpu_cap"),  # 2 GPUs each: 5 // 2
        (1, 1, 3, 20, 4, "gpu_cap"),  # 3 workers hold GPUs + 1 free
        (1, 0, 0, 10, 0, "gpu_cap"),  # no GPU free: nothing can start
        (1, None, 0, 10, 5, "scale_up"),  # no GPU info: no cap
        (0, 0, 0, 10, 5, "scale_up"),  # not a GPU service: no cap
    ],
)
def test_gpu_cap(gpu_per_worker: int, free: int | None, workers: int, waiting: int, want: int, rule: str) -> None:
    cfg = AutoscalerConfig(min=0, max=10, gpu_per_worker=gpu_per_worker)
    obs = Observation(waiting, 0, gpu_workers(workers), free_gpus=free)
    d, _ = decide(obs, PolicyState(current=workers), cfg, 0.0)
    assert (d.desired, d.rule) == (want, rule)


def test_draining_workers_do_not_count_as_gpu_holders() -> None:
    cfg = AutoscalerConfig(min=0, max=10, gpu_per_worker=1)
    obs = Observation(10, 0, gpu_workers(2, "draining"), free_gpus=1)
    d, _ = decide(obs, PolicyState(), cfg, 0.0)
    assert d.desired == 1


@pytest.mark.parametrize(
    ("cfg", "waiting", "free", "desired", "standby"),
    [
        (AutoscalerConfig(min=0, max=4, warm_standby=2), 0, None, 0, 2),
        (AutoscalerConfig(min=0, max=4, warm_standby=2), 6, None, 3, 1),  # within max
        (AutoscalerConfig(min=0, max=4, warm_standby=2), 20, None, 4, 0),
        (AutoscalerConfig(min=0, max=4, warm_standby=2, gpu_per_worker=1), 2, 2, 1, 1),  # within GPUs
    ],
)
def test_warm_standby(cfg: AutoscalerConfig, waiting: int, free: int | None, desired: int, standby: int) -> None:
    d, _ = decide(Observation(waiting, 0, (), free_gpus=free), PolicyState(), cfg, 0.0)
    assert (d.desired, d.standby) == (desired, standby)


def test_load_turns_standby_workers_on_before_spawning() -> None:
    cfg = AutoscalerConfig(min=0, max=4, warm_standby=2)
    workers = (WorkerView("s1", "standby"), WorkerView("s2", "standby"))
    d, _ = decide(Observation(1, 0, workers), PolicyState(), cfg, 0.0)
    assert d.desired == 1 and d.activate == ("s1",) and d.victims == ()
    assert d.standby == 2  # the controller spawns one standby to replace s1


def test_surplus_standby_is_stopped() -> None:
    cfg = AutoscalerConfig(min=0, max=4, warm_standby=1)
    workers = (WorkerView("s1", "standby"), WorkerView("s2", "standby"), WorkerView("s3", "standby"))
    d, _ = decide(Observation(0, 0, workers), PolicyState(), cfg, 0.0)
    assert d.activate == () and len(d.victims) == 2


def test_scale_in_victims_are_idle_first() -> None:
    cfg = AutoscalerConfig(min=0, max=10, stabilization=0)
    workers = (
        WorkerView("busy-old", "busy", busy_since=1.0),
        WorkerView("idle-hot", "idle", gpu_util=80.0),
        WorkerView("busy-new", "busy", busy_since=9.0),
        WorkerView("idle-cold", "idle", gpu_util=5.0),
    )
    d, _ = decide(Observation(0, 2, workers), PolicyState(current=4), cfg, 10.0)
    assert d.desired == 1
    assert d.victims == ("idle-cold", "idle-hot", "busy-old")


def test_unhealthy_workers_are_drained_and_replaced() -> None:
    cfg = AutoscalerConfig(min=2, max=10)
    workers = (WorkerView("bad", "busy", busy_since=1.0, healthy=False), WorkerView("ok", "idle"))
    d, _ = decide(Observation(0, 1, workers), PolicyState(current=2), cfg, 5.0)
    assert d.desired == 2 and d.victims == ("bad",)


@pytest.mark.parametrize(
    ("workers", "n", "want"),
    [
        ((WorkerView("a", "busy", busy_since=1), WorkerView("b", "idle")), 1, ("b",)),
        (
            (WorkerView("a", "idle", gpu_util=50), WorkerView("b", "idle", gpu_util=10), WorkerView("c", "idle")),
            2,
            ("c", "b"),
        ),  # no utilisation counts as 0
        (
            (WorkerView("new", "busy", busy_since=9), WorkerView("old", "busy", busy_since=1), WorkerView("mid", "busy", busy_since=5)),
            2,
            ("old", "mid"),
        ),  # the most recently started busy worker is the last choice
        ((WorkerView("d", "draining"), WorkerView("i", "idle")), 2, ("i",)),  # draining already leaving
        ((WorkerView("i", "idle"), WorkerView("s", "starting"), WorkerView("x", "standby")), 2, ("x", "s")),
        ((WorkerView("a", "idle"), WorkerView("b", "idle", healthy=False)), 1, ("b",)),
        ((WorkerView("a", "idle"),), 0, ()),
    ],
)
def test_choose_victims(workers: tuple[WorkerView, ...], n: int, want: tuple[str, ...]) -> None:
    assert choose_victims(workers, n) == want


def test_config_from_spec_reads_every_key() -> None:
    spec = parse_spec(
        {
            "metadata": {"name": "svc", "gpu": 2},
            "autoscaler": {
                "min": 0,
                "max": 8,
                "strategies": {"avg_waiting_length": 3},
                "behavior": {
                    "onZero": {"scaleDownGracePeriodSeconds": 30},
                    "scaleDown": {"stabilizationWindowSeconds": 5, "maxStepPerTick": 2},
                    "scaleUp": {"maxStepPerTick": 4},
                    "warmStandby": 1,
                },
            },
        }
    )
    assert from_spec(spec) == AutoscalerConfig(
        min=0, max=8, avg_waiting_length=3, scale_down_grace=30, stabilization=5,
        scale_up_step=4, scale_down_step=2, warm_standby=1, gpu_per_worker=2,
    )


def test_defaults_match_the_eas_defaults() -> None:
    assert from_spec(parse_spec({"metadata": {"name": "svc"}})) == AutoscalerConfig()
