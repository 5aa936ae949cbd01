"""``scalejob status``: per service, the queue, the workers by state and the last decision."""

from __future__ import annotations

import time

import redis
from rich.table import Table

from app import services, tenants
from autoscale import history
from workers import registry


def status_table(r: redis.Redis) -> Table:
    """One row per deployed service: waiting, running, workers by state, desired, last decision."""
    table = Table(title="scalejob services")
    for col in ("service", "waiting", "running", "workers", "desired", "last decision", "reason"):
        table.add_column(col, overflow="fold")
    for name in sorted(services.all_specs(r)):
        workers = registry.list_workers(r, name)
        states: dict[str, int] = {}
        for w in workers:
            states[w.state] = states.get(w.state, 0) + 1
        running = sum(len(w.running) for w in workers)
        [last] = history.recent(r, name, 1) or [None]
        desired = "-" if last is None else f"{last['desired']}" + (f" +{last['standby']} standby" if last["standby"] else "")
        when = "-" if last is None else f"{last['rule']} {time.time() - last.get('last_at', last['at']):.0f}s ago"
        reason = "" if last is None else last["reason"]
        table.add_row(name, str(tenants.waiting(r, name)), str(running), ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "0", desired, when, reason)
    return table
