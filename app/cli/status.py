"""``scalejob status [--watch]``: the data of :mod:`app.queue.status` as two rich tables.

``--watch`` redraws them every second with ``rich.live`` until Ctrl-C.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

import redis
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from app.queue.status import status_data


def _cell(row: dict[str, Any], col: str) -> str:
    if col == "workers":
        return ", ".join(f"{n} {st}" for st, n in sorted(row["workers"].items())) or "0"
    return str(row[col])


def status_tables(r: redis.Redis, now: float | None = None, wide: bool = False, width: int = 80) -> Group:
    """A services table (one row each) and a workers table (one row per live worker).

    Narrow by default (fits 80 columns: long reasons are cut with an ellipsis, one line per
    row); ``wide`` folds them in full."""
    data = status_data(r, now)
    overflow: Literal["fold", "ellipsis"] = "fold" if wide else "ellipsis"  # workers table
    # narrow: light borders, so 80 columns hold the numbers
    look: dict[str, Any] = {} if wide else {"box": box.SIMPLE_HEAD, "pad_edge": False}
    svc = Table(title="scalejob services", title_justify="left", **look)
    if wide:
        for col in ("service", "waiting", "running", "workers", "desired", "failing", "last decision", "reason"):
            svc.add_column(col, overflow="fold", justify="right" if col in ("waiting", "running") else "left")
    else:  # 80 columns: the numbers in full, then one cut column: why it fails, else the autoscaler's reason
        numbers = ("service", "waiting", "running", "workers", "desired")
        for col in numbers:
            svc.add_column(col, no_wrap=True, min_width=len(col), max_width=16 if col == "service" else None,
                           overflow="ellipsis", justify="right" if col in ("waiting", "running") else "left")
        fixed = [max([len(c), *(len(_cell(x, c)) for x in data["services"])]) for c in numbers]
        # a divider and two pads between columns, the box edges
        left = width - sum(min(f, 16) for f in fixed) - 3 * 5 - 2
        svc.add_column("failing / reason", no_wrap=True, overflow="ellipsis", max_width=max(left, 16))
    wk = Table(title="workers", title_justify="left", **look)
    for col in ("worker", "service", "state", "task", "up", "GPU", "spec"):
        wk.add_column(col, overflow=overflow, no_wrap=not wide)
    for s in data["services"]:
        by_state = _cell(s, "workers")
        failing = f"[red]{escape(s['failing'])}[/red]" if s["failing"] else "-"
        cells = [s["service"], str(s["waiting"]), str(s["running"]), by_state, s["desired"]]
        if wide:
            svc.add_row(*cells, failing, s["last_decision"], s["reason"])
        else:
            svc.add_row(*cells, failing if s["failing"] else escape(s["reason"]))
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


def watch(r: redis.Redis, console: Console, interval: float = 1.0, stop: Callable[[], bool] = lambda: False,
          wide: bool = False) -> None:
    """Redraw the status every ``interval`` s until Ctrl-C (or ``stop()``)."""
    first = status_tables(r, wide=wide, width=console.width)
    try:
        with Live(first, console=console, refresh_per_second=4, screen=False) as live:
            while not stop():
                time.sleep(interval)
                live.update(status_tables(r, wide=wide, width=console.width))
    except KeyboardInterrupt:
        pass
