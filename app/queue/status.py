"""``scalejob status [--watch]``: per service, the queue, the workers by state and the last decision.

Everything comes from what the parts already publish: the broker depth (``app.queue.tenants``), the
worker registry (``app/queue/workers.py``: state, running request, GPUs, spec hash) and the
autoscaler's decision history (``app/queue/decisions.py``). ``--watch`` redraws it every second
with ``rich.live`` until Ctrl-C.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

import redis
from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.live import Live
from rich.table import Table

from app.queue import services, tenants
from app.queue import decisions as history
from app.queue import workers as registry


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


def front_end_view(r: redis.Redis, spec: Any) -> dict[str, Any] | None:
    """The front end's published state (app/cli/frontends.py); ``not running`` when a spec wants one and no stack runs it."""
    from app.cli import frontends

    if not frontends.wants_front_end(spec):
        return None
    return frontends.state(r, spec.name) or {"state": "not running", "last_failure": None, "restarts": 0, "restart_in": 0.0}


def _cell(row: dict[str, Any], col: str) -> str:
    if col == "workers":
        return ", ".join(f"{n} {st}" for st, n in sorted(row["workers"].items())) or "0"
    return str(row[col])


def status_data(r: redis.Redis, now: float | None = None) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (``scalejob status -o json`` prints it)."""
    from app.queue import health

    now = time.time() if now is None else now
    specs = services.all_specs(r)
    out: dict[str, Any] = {"services": [], "workers": []}
    for name in sorted(specs):
        workers = registry.list_workers(r, name)
        states: dict[str, int] = {}
        for w in workers:
            states[w.state] = states.get(w.state, 0) + 1
        newest = history.recent(r, name, 1)
        last = newest[0] if newest else None
        desired, when, reason = _decision(last, now)
        h = health.view(r, name, now)
        failing = ""
        if h["health"] != health.OK and h["last_failure"]:
            failing = f"{h['last_failure']['reason']} ({h['failures']} failed starts, next in {h['backoff_left']:.0f}s)"
        fe = front_end_view(r, specs[name])
        if fe and fe["state"] == "backoff" and fe.get("last_failure"):
            failing = "; ".join(x for x in (failing, f"front end restarting in {fe['restart_in']:.0f}s: {fe['last_failure']['reason']}") if x)
        out["services"].append({
            "service": name, "type": specs[name].metadata.type, "waiting": tenants.waiting(r, name), "running": sum(len(w.running) for w in workers),
            "workers": states, "desired": desired, "last_decision": when, "reason": reason, "health": h["health"], "failing": failing,
            "failures": h["failures"], "backoff_left": h["backoff_left"], "last_failure": h["last_failure"], "front_end": fe,
        })
        current = services.spec_hash(specs[name])
        for w in workers:
            out["workers"].append({
                "worker": w.name, "service": name, "state": w.state, "task": w.running[0] if w.running else "-",
                "up": _ago(now - w.started_at).replace(" ago", ""), "gpu": gpu_label(w.gpus),
                "spec": "current" if w.spec_hash in ("", current) else "outdated (rolls after its task)",
            })
    return out


def status_tables(r: redis.Redis, now: float | None = None, wide: bool = False, width: int = 80) -> Group:
    """A services table (one row each) and a workers table (one row per live worker).

    Narrow by default (fits 80 columns: long reasons are cut with an ellipsis, one line per
    row); ``wide`` folds them in full."""
    data = status_data(r, now)
    overflow: Literal["fold", "ellipsis"] = "fold" if wide else "ellipsis"  # workers table
    look: dict[str, Any] = {} if wide else {"box": box.SIMPLE_HEAD, "pad_edge": False}  # narrow: light borders, so 80 columns hold the numbers
    svc = Table(title="scalejob services", title_justify="left", **look)
    if wide:
        for col in ("service", "waiting", "running", "workers", "desired", "failing", "last decision", "reason"):
            svc.add_column(col, overflow="fold", justify="right" if col in ("waiting", "running") else "left")
    else:  # 80 columns: the numbers in full, then one cut column: why it fails, else the autoscaler's reason
        for col in ("service", "waiting", "running", "workers", "desired"):
            svc.add_column(col, no_wrap=True, min_width=len(col), max_width=16 if col == "service" else None, overflow="ellipsis",
                           justify="right" if col in ("waiting", "running") else "left")
        fixed = [max([len(c), *(len(_cell(x, c)) for x in data["services"])]) for c in ("service", "waiting", "running", "workers", "desired")]
        left = width - sum(min(f, 16) for f in fixed) - 3 * 5 - 2  # a divider and two pads between columns, the box edges
        svc.add_column("failing / reason", no_wrap=True, overflow="ellipsis", max_width=max(left, 16))
    wk = Table(title="workers", title_justify="left", **look)
    for col in ("worker", "service", "state", "task", "up", "GPU", "spec"):
        wk.add_column(col, overflow=overflow, no_wrap=not wide)
    for s in data["services"]:
        by_state = _cell(s, "workers")
        failing = f"[red]{escape(s['failing'])}[/red]" if s["failing"] else "-"
        cells = [s["service"], str(s["waiting"]), str(s["running"]), by_state, s["desired"]]
        svc.add_row(*cells, failing, s["last_decision"], s["reason"]) if wide else svc.add_row(*cells, failing if s["failing"] else escape(s["reason"]))
    for w in data["workers"]:
        wk.add_row(w["worker"], w["service"], w["state"], w["task"], w["up"], w["gpu"], w["spec"])
    if not data["services"]:
        svc.caption = "no service deployed (scalejob deploy SPEC.json)"
    elif not wide:
        svc.caption = "cut to fit: scalejob status --wide (or -o json)"
    return Group(svc, wk)


def status_table(r: redis.Redis) -> Group:
    """Kept for callers of the first version: :func:`status_tables` with every column in full (``--wide``)."""
    return status_tables(r, wide=True)


def watch(r: redis.Redis, console: Console, interval: float = 1.0, stop: Callable[[], bool] = lambda: False, wide: bool = False) -> None:
    """Redraw the status every ``interval`` s until Ctrl-C (or ``stop()``)."""
    try:
        with Live(status_tables(r, wide=wide, width=console.width), console=console, refresh_per_second=4, screen=False) as live:
            while not stop():
                time.sleep(interval)
                live.update(status_tables(r, wide=wide, width=console.width))
    except KeyboardInterrupt:
        pass
