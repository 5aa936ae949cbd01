"""What ``scalejob simulate`` and ``benchmarks/simulate.py`` print: rows, JSON, timeline and frontier PNGs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table

from app.core.specs import load_spec
from autoscale.config import from_spec
from autoscale.policy import AutoscalerConfig
from autoscale.simulate.engine import SimResult, load_trace, simulate
from autoscale.simulate.policies import Policy, ScalejobPolicy, hpa_policy, keda_policy, scalejob_label

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


def compare(trace: list[tuple[float, float]], cfg: AutoscalerConfig, start_time: float = 0.6, poll: float = 0.5,
            redelivery: float = 3600.0) -> list[SimResult]:
    """scalejob (the config as given), KEDA with its defaults and an HPA with the config's target.

    Same trace, same min/max."""
    scalejob = ScalejobPolicy(cfg, period=poll, name=scalejob_label(cfg))
    policies: list[Policy] = [scalejob, keda_policy(cfg), hpa_policy(cfg)]
    return [simulate(trace, p, start_time=start_time, redelivery=redelivery) for p in policies]


def row(r: SimResult) -> dict[str, Any]:
    """One result as data (``scalejob simulate --json``): the names other tools read."""
    return {
        "policy": r.policy,
        "worker_seconds": round(r.worker_seconds, 3),
        "busy_seconds": round(r.busy_seconds, 3),
        "wait_p50": round(r.p50, 3),
        "wait_p95": round(r.p95, 3),
        "wait_max": round(max(r.waits, default=0.0), 3),
        "spawns": r.spawns,
        "cut": r.interrupted,
        "tasks": len(r.waits),
        "unfinished": r.unfinished,
        **r.settings,
    }


def table(results: list[SimResult]) -> list[dict[str, str]]:
    """One row per policy, formatted for printing."""
    return [
        {
            "policy": r.policy,
            "worker-s": f"{r.worker_seconds:,.0f}",
            "wait p50": f"{r.p50:.2f}",
            "wait p95": f"{r.p95:.2f}",
            "wait max": f"{max(r.waits, default=0):.2f}",
            "spawns": str(r.spawns),
            "stops": str(r.stops),
            "cut": str(r.interrupted),
        }
        for r in results
    ]


def plot(results: list[SimResult], path: str | Path, title: str = "") -> Path:
    """A PNG timeline per policy: load, live workers, desired, and spawn/stop marks."""
    import matplotlib  # noqa: PLC0415 - heavy (about 0.5 s), only for --png

    matplotlib.use("Agg")  # before pyplot: no display needed
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(len(results), 1, figsize=(12, 2.6 * len(results)), sharex=True, squeeze=False)
    for ax, r in zip(axes[:, 0], results, strict=True):
        ts = [p[0] for p in r.timeline]
        ax.step(ts, [p[1] for p in r.timeline], where="post", color="tab:gray", lw=0.8,
                label="load (waiting + running)")
        ax.step(ts, [p[2] for p in r.timeline], where="post", color="tab:blue", lw=1.4, label="workers")
        ax.step(ts, [p[3] for p in r.timeline], where="post", color="tab:orange", lw=0.8, ls="--", label="desired")
        for kind, color, y in (("spawn", "tab:green", 0.97), ("stop", "tab:red", 0.93)):
            xs = [t for t, e in r.events if e == kind]
            ax.plot(xs, [y] * len(xs), "|", color=color, transform=ax.get_xaxis_transform(), ms=6, label=kind)
        ax.set_ylabel("count")
        ax.set_title(f"{r.policy}: {r.worker_seconds:,.0f} worker-s, p95 wait {r.p95:.2f} s, {r.interrupted} cut",
                     fontsize=10)
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", fontsize=8, ncol=5)
    axes[-1, 0].set_xlabel("time (s)")
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return _save(fig, path)


def _save(fig: Figure, path: str | Path) -> Path:
    import matplotlib.pyplot as plt  # noqa: PLC0415 - heavy, only for --png (plot() chose the backend)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def config_for(spec_path: str | Path | None, overrides: dict[str, float | int | None]) -> AutoscalerConfig:
    """The config to simulate: the spec's autoscaler block (or min 0 when none), then overrides.

    An ``avg_waiting_length`` override replaces a spec's wait target and a ``target_wait_seconds``
    one a spec's ratio: the two are one or the other, as in a spec.
    """
    cfg = from_spec(load_spec(spec_path)) if spec_path is not None else AutoscalerConfig(min=0)
    given: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    if "avg_waiting_length" in given and "target_wait_seconds" in given:
        raise ValueError("set either avg_waiting_length or target_wait_seconds, not both")
    if "avg_waiting_length" in given:
        given["target_wait_seconds"] = None
    cfg = replace(cfg, **given)
    bad_target = cfg.target_wait_seconds is not None and cfg.target_wait_seconds <= 0
    if cfg.max < cfg.min or cfg.max < 1 or cfg.avg_waiting_length <= 0 or bad_target:
        raise ValueError(f"bad autoscaler config: min {cfg.min}, max {cfg.max}, avg_waiting_length "
                         f"{cfg.avg_waiting_length:g}, target_wait_seconds {cfg.target_wait_seconds}")
    return cfg


def run_cli(  # noqa: PLR0913
    console: Console, trace_path: Path, spec_path: Path | None, overrides: dict, start_time: float = 0.6,
    poll: float = 0.5,
    with_references: bool = True, png: Path | None = None, as_json: bool = False, redelivery: float = 3600.0,
) -> list[SimResult]:
    """``scalejob simulate``: print the table, or with ``as_json`` one JSON list of rows (and write the PNG)."""
    cfg = config_for(spec_path, overrides)
    trace = load_trace(trace_path)
    if with_references:
        results = compare(trace, cfg, start_time=start_time, poll=poll, redelivery=redelivery)
    else:
        policy = ScalejobPolicy(cfg, period=poll, name=scalejob_label(cfg))
        results = [simulate(trace, policy, start_time=start_time, redelivery=redelivery)]
    if png is not None:
        plot(results, png, title=str(trace_path))
    if as_json:
        print(json.dumps([row(r) for r in results], indent=1))
        return results
    _print_table(console, trace_path, trace, cfg, start_time, redelivery, results)
    if png is not None:
        console.print(f"timeline: {png}")
    return results


def _print_table(console: Console, trace_path: Path, trace: list, cfg: AutoscalerConfig, start_time: float,
                 redelivery: float, results: list[SimResult]) -> None:
    if cfg.target_wait_seconds is not None:
        rule = f"target_wait_seconds {cfg.target_wait_seconds:g}"
    else:
        rule = f"avg_waiting_length {cfg.avg_waiting_length:g}"
    console.print(
        f"{trace_path}: {len(trace)} tasks; min {cfg.min} max {cfg.max} {rule} grace {cfg.scale_down_grace:g}s "
        f"window {cfg.stabilization:g}s warm standby {cfg.warm_standby}; worker start {start_time:g}s; "
        f"Kubernetes: SIGKILL 30 s after SIGTERM, a cut task back after "
        f"{redelivery:g} s (visibility timeout); waits in s; cut = tasks killed mid-run",
        highlight=False,
    )
    rows = table(results)
    t = Table(box=box.SIMPLE, pad_edge=False, collapse_padding=True)
    for col in rows[0]:
        t.add_column(col, justify="left" if col == "policy" else "right", no_wrap=True)
    for r in rows:
        t.add_row(*r.values())
    console.print(t)
