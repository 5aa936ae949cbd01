"""The trace simulator: the same policy as the controller, a worker start-time model, references."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli.main import cli
from autoscale.policy import AutoscalerConfig
from autoscale.simulate import ScalejobPolicy, compare, hpa_policy, keda_policy, load_trace, plot, row, simulate

ROOT = Path(__file__).resolve().parents[1]
BURSTY = ROOT / "benchmarks" / "traces" / "bursty.csv"
CFG = AutoscalerConfig(min=0, max=4, scale_down_grace=60, stabilization=1)


def test_task_at_zero_waits_only_for_the_worker_start() -> None:
    r = simulate([(10.0, 5.0)], ScalejobPolicy(CFG), start_time=0.6)
    assert r.waits == [pytest.approx(0.6)]  # the enqueue wakes the policy: no tick to wait for
    assert (r.spawns, r.stops, r.interrupted) == (1, 1, 0)


def test_cost_counts_from_spawn_to_exit_after_the_grace() -> None:
    r = simulate([(0.0, 10.0)], ScalejobPolicy(CFG), start_time=0.6)
    stop_at = next(t for t, e in r.events if e == "stop")
    assert 10.6 + 60 <= stop_at <= 10.6 + 60 + 0.5  # grace, then the next 0.5 s tick
    assert r.worker_seconds == pytest.approx(stop_at, abs=1e-6)


def test_keda_waits_for_its_poll_and_keeps_workers_for_the_cooldown() -> None:
    r = simulate([(31.0, 5.0)], keda_policy(CFG), start_time=0.6)
    assert r.waits == [pytest.approx(60.6 - 31.0)]  # next 30 s poll at t=60, then the start time
    stop_at = next(t for t, e in r.events if e == "stop")
    assert stop_at >= 60 + 300  # cooldownPeriod after the last poll that saw work


def test_hpa_never_goes_to_zero() -> None:
    r = simulate([(5.0, 1.0)], hpa_policy(CFG))
    assert r.waits == [0.0] and r.stops == 0
    assert r.worker_seconds == pytest.approx(r.horizon)


def test_warm_standby_takes_the_first_task_without_a_start() -> None:
    cfg = AutoscalerConfig(min=0, max=4, warm_standby=1)
    r = simulate([(100.0, 5.0)], ScalejobPolicy(cfg), start_time=0.6)
    assert r.waits == [0.0]


def test_kubernetes_scale_down_cuts_busy_pods_but_scalejob_drains() -> None:
    long = [(0.0, 400.0)] * 3  # taken by the oldest worker and two new ones
    burst = [(0.1, 1.0)] * 20  # more new workers; the HPA scales down after its 300 s window
    trace = long + burst
    cfg = AutoscalerConfig(min=0, max=8)
    hpa = simulate(trace, hpa_policy(cfg), grace=30)
    ours = simulate(trace, ScalejobPolicy(cfg), grace=30)
    assert hpa.interrupted >= 1, "the ReplicaSet picks the newest pods, busy or not"
    assert ours.interrupted == 0
    for r in (hpa, ours):
        assert len(r.waits) == len(trace)  # every task ran (a cut one was redelivered)


def test_bursty_trace_comparison() -> None:
    results = compare(load_trace(BURSTY), AutoscalerConfig(min=0, max=20))
    ours, keda, hpa = results
    assert [r.policy for r in results] == ["scalejob avg_waiting_length 2", "KEDA listLength 5 (defaults)", "HPA target 2"]
    assert len(ours.waits) == len(keda.waits) == len(hpa.waits) == len(load_trace(BURSTY))
    assert ours.worker_seconds < keda.worker_seconds and ours.worker_seconds < hpa.worker_seconds
    assert ours.p95 < keda.p95 and ours.p95 < hpa.p95
    for r in results:
        assert 0 < r.busy_seconds <= r.worker_seconds


def test_a_cut_task_comes_back_after_the_redelivery_delay() -> None:
    long = [(0.0, 400.0)] * 3
    burst = [(0.1, 1.0)] * 20
    cfg = AutoscalerConfig(min=0, max=8)
    fast = simulate(long + burst, hpa_policy(cfg), grace=30, redelivery=0.0)
    slow = simulate(long + burst, hpa_policy(cfg), grace=30, redelivery=3600.0)
    assert fast.interrupted == slow.interrupted >= 1
    assert max(fast.waits) < 600 < 300 + 3600 < max(slow.waits)  # cut after the 300 s window; back at once, or an hour later
    assert len(slow.waits) == len(long + burst)


def test_target_mode_uses_the_observed_run_times() -> None:
    """Same queue, tasks 100x longer: the ratio rule asks the same count, the target rule many more."""
    short = [(i * 0.01, 1.0) for i in range(5)] + [(300 + i * 0.01, 1.0) for i in range(40)]  # the first five teach the run time
    long = [(a, d * 100) for a, d in short]
    cfg = AutoscalerConfig(min=0, max=40, target_wait_seconds=30)
    r_short = simulate(short, ScalejobPolicy(cfg), start_time=0.6)
    r_long = simulate(long, ScalejobPolicy(cfg), start_time=0.6)
    assert r_short.spawns < 10 and r_long.spawns > 40
    assert r_short.p95 <= 30 and r_long.p95 <= 30


def test_load_trace(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("arrival,duration\n# a comment\n2.5,1\n1,3\n")
    assert load_trace(f) == [(1.0, 3.0), (2.5, 1.0)]
    f.write_text("1,2\n3,oops\n")
    with pytest.raises(ValueError, match=r"t.csv:2: expected 'arrival,duration'"):
        load_trace(f)
    with pytest.raises(ValueError, match="no such file"):
        load_trace(tmp_path / "missing.csv")


def test_shipped_trace_is_what_the_generator_makes() -> None:
    spec = importlib.util.spec_from_file_location("make_bursty", BURSTY.with_name("make_bursty.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    assert mod.make() == mod.make() == load_trace(BURSTY)


def test_plot_writes_a_png(tmp_path: Path) -> None:
    results = compare([(0.0, 2.0), (1.0, 2.0)], CFG)
    out = plot(results, tmp_path / "img" / "t.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_prints_the_table_and_writes_the_timeline(tmp_path: Path) -> None:
    png = tmp_path / "sim.png"
    res = CliRunner().invoke(cli, ["simulate", str(BURSTY), "--max", "20", "--png", str(png)], env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    for name in ("scalejob", "KEDA listLength 5 (defaults)", "HPA target 2", "worker-s", "wait p95"):
        assert name in res.output
    assert png.stat().st_size > 10_000


def test_cli_json_rows_from_a_spec_with_a_wait_target(tmp_path: Path) -> None:
    spec = tmp_path / "svc.json"
    spec.write_text(json.dumps({"metadata": {"name": "svc"}, "autoscaler": {"min": 0, "max": 20, "strategies": {"target_wait_seconds": 60}}}))
    res = CliRunner().invoke(cli, ["simulate", str(BURSTY), "--spec", str(spec), "--json", "--start-time", "20"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert [r["policy"] for r in rows] == ["scalejob target 60 s", "KEDA listLength 5 (defaults)", "HPA target 2"]
    for r in rows:
        assert {"policy", "worker_seconds", "wait_p50", "wait_p95", "wait_max", "spawns", "cut"} <= r.keys()
        assert r["tasks"] == len(load_trace(BURSTY)) and r["start_time"] == 20


def test_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["simulate", str(tmp_path / "nope.csv")])
    assert res.exit_code == 1 and "nope.csv: no such file" in " ".join(res.output.split())
    res = CliRunner().invoke(cli, ["simulate", str(BURSTY), "--min", "5", "--max", "2"])
    assert res.exit_code == 1 and "bad autoscaler config" in " ".join(res.output.split())
    res = CliRunner().invoke(cli, ["simulate", str(BURSTY), "--avg-waiting-length", "2", "--target-wait", "30"])
    assert res.exit_code == 1 and "either avg_waiting_length or target_wait_seconds" in " ".join(res.output.split())


def test_policy_sweep_smoke(tmp_path: Path) -> None:
    """benchmarks/simulate.py's verdict and frontier on a slice of the shipped trace (the full sweep is a benchmark)."""
    from benchmarks import simulate as sweep

    trace = load_trace(BURSTY)[:60]
    rows = []
    for p in [q for i, q in enumerate(sweep.policies(20.0)) if i in (0, 1, 5, 9, 15, 20, 21)]:
        r = simulate(trace, p, start_time=20.0)
        rows.append({"trace": "bursty", "static": not p.name.startswith("scalejob target"), **row(r)})
    verdicts = sweep.verdicts(rows)
    assert [(v["target"], v["met"] is not False) for v in verdicts] == [(60.0, True), (120.0, True)]
    assert all(v["cost_ratio"] is None or v["cost_ratio"] > 0 for v in verdicts)
    png = sweep.frontier(rows, tmp_path / "f.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
