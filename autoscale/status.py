"""``scalejob status [--watch]``: per service, the queue, the workers by state and the last decision.

Everything comes from what the parts already publish: the broker depth (``app.tenants``), the
worker registry (``workers/registry.py``: state, running request, GPUs, spec hash) and the
autoscaler's decision history (``autoscale/history.py``). ``--watch`` redraws it every second
with ``rich.live`` until Ctrl-C.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from app import services, tenants
from autoscale import history
from workers import registry


def gpu_label(gpus: str) -> str:
    """The devices a worker was given (``CUDA_VISIBLE_DEVICES``), or ``no GPU``."""
    return f"GPU {gpus}" if gpus.strip() else "no GPU"


def _ago(seconds: float) -> str:
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def _decision(last: dict[str, Any] | None, now: float) -> tuple[str, str, str]:
    """(desired, when and which rule, reason) of the newest decision; dashes before the first one."""
    if last is None:
        return "-", "-", "no decision yet (is `scalejob autoscale` or `scalejob up` running?)"
    desired = f"{last['desired']}" + (f" +{last['standby']} standby" if last.get("standby") else "")
    when = f"{last['rule']} {_ago(now - last.get('last_at', last['at']))}"
    return desired, when, last.get("reason_now") or last["reason"]


def status_tables(r: redis.Redis, now: float | None = None) -> Group:
    """A services table (one row each) and a workers table (one row per live worker)."""
    now = time.time() if now is None else now
    specs = services.all_specs(r)
    svc = Table(title="scalejob services", title_justify="left")
    for col in ("service", "waiting", "running", "workers", "desired", "last decision", "reason"):
        svc.add_column(col, overflow="fold", justify="right" if col in ("waiting", "running") else "left")
    wk = Table(title="workers", title_justify="left")
    for col in ("worker", "service", "state", "task", "up", "GPU", "spec"):
        wk.add_column(col, overflow="fold")
    for name in sorted(specs):
        workers = registry.list_workers(r, name)
        states: dict[str, int] = {}
        for w in workers:
            states[w.state] = states.get(w.state, 0) + 1
        [last] = history.recent(r, name, 1) or [None]
        desired, when, reason = _decision(last, now)
        by_state = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "0"
        svc.add_row(name, str(tenants.waiting(r, name)), str(sum(len(w.running) for w in workers)), by_state, desired, when, reason)
        current = services.spec_hash(specs[name])
        for w in workers:
            spec = "current" if w.spec_hash in ("", current) else "outdated (rolls after its task)"
            task = w.running[0] if w.running else "-"
            wk.add_row(w.name, name, w.state, task, _ago(now - w.started_at).replace(" ago", ""), gpu_label(w.gpus), spec)
    if not specs:
        svc.caption = "no service deployed (scalejob deploy SPEC.json)"
    return Group(svc, wk)


def status_table(r: redis.Redis) -> Group:
    """Kept for callers of the first version: the same as :func:`status_tables`."""
    return status_tables(r)


def watch(r: redis.Redis, console: Console, interval: float = 1.0, stop: Callable[[], bool] = lambda: False) -> None:
    """Redraw the status every ``interval`` s until Ctrl-C (or ``stop()``)."""
    try:
        with Live(status_tables(r), console=console, refresh_per_second=4, screen=False) as live:
            while not stop():
                time.sleep(interval)
                live.update(status_tables(r))
    except KeyboardInterrupt:
        pass
