"""Where every autoscaling decision goes: a bounded Redis list, Prometheus, the log.

Owner of ``keys.decisions(service)``: a list of JSON entries, newest first (LPUSH + LTRIM to
``settings.decisions_kept``). A tick whose decision is the same as the previous one and took no
action does not push a new entry; it updates the head entry in place (``repeats``, ``last_at``
and the latest inputs), so the list keeps its history of *changes* while every tick is counted.
``GET /api/services/{name}`` and ``scalejob status`` read it with :func:`recent`.

Because a merged entry keeps only its latest inputs, it cannot be plotted. The chart reads a
second list this module owns, ``keys.samples(service)``: one real sample per tick in which any
plotted number changed, and at least every ``SAMPLE_EVERY`` seconds (:func:`samples`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis
from prometheus_client import Counter, Gauge, Histogram

from app.core import keys

log = logging.getLogger("autoscale.decisions")

WAITING = Gauge("scalejob_autoscaler_waiting", "Tasks waiting on the broker", ["service"])
RUNNING = Gauge("scalejob_autoscaler_running", "Tasks running on workers", ["service"])
WORKERS = Gauge("scalejob_autoscaler_workers", "Workers by state", ["service", "state"])
DESIRED = Gauge("scalejob_autoscaler_desired", "Consuming workers the policy wants", ["service"])
STANDBY = Gauge("scalejob_autoscaler_standby_desired", "Warm standby workers the policy wants", ["service"])
DECISIONS = Counter("scalejob_autoscaler_decisions", "Decisions by rule", ["service", "rule"])
ACTIONS = Counter("scalejob_autoscaler_actions", "Actions taken", ["service", "action"])
TICK = Histogram(
    "scalejob_autoscaler_tick_seconds",
    "Observe+decide+act time of one service",
    ["service"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)

_SAME = ("desired", "standby", "rule")
SAMPLE_EVERY = 5.0  # seconds: a sample at least this often, even when nothing changed
SAMPLES_KEPT = 7200  # an hour at one change per 0.5 s tick
_last_sample: dict[tuple[str, str], tuple[tuple[Any, ...], float]] = {}  # (key, service) -> (values, at)
STATES = ("starting", "idle", "busy", "draining", "standby")


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in _SAME) and not b.get("actions")


def record(r: redis.Redis, service: str, entry: dict[str, Any], keep: int) -> None:
    """Store one decision (see the module docstring) and publish it to metrics and the log."""
    _metrics(service, entry)
    _sample(r, service, entry)
    key = keys.decisions(service)
    head_raw = r.lindex(key, 0)
    head = json.loads(head_raw) if head_raw else None
    if head is not None and _same(head, entry):
        head.update(
            repeats=head.get("repeats", 0) + 1, last_at=entry["at"], inputs=entry["inputs"], reason_now=entry["reason"]
        )
        r.lset(key, 0, json.dumps(head))
        log.debug("%s: %s", service, entry["reason"])
        return
    with r.pipeline(transaction=False) as p:
        p.lpush(key, json.dumps(entry))
        p.ltrim(key, 0, keep - 1)
        p.execute()
    actions = "; ".join(entry["actions"]) or "no action"
    log.info("%s: %s [%s] -> %s (%.1f ms)", service, entry["reason"], entry["rule"], actions, entry["duration_ms"])


def _sample(r: redis.Redis, service: str, entry: dict[str, Any]) -> None:
    """Append a chart sample when a plotted number changed or ``SAMPLE_EVERY`` s passed."""
    inputs = entry["inputs"]
    workers = sum(inputs["workers"].get(s, 0) for s in ("starting", "idle", "busy"))
    values = (inputs["waiting"], inputs["running"], workers, entry["desired"])
    key = keys.samples(service)
    last = _last_sample.get((key, service))
    if last is not None and last[0] == values and entry["at"] - last[1] < SAMPLE_EVERY:
        return
    _last_sample[(key, service)] = (values, entry["at"])
    sample = {
        "t": entry["at"],
        "waiting": values[0],
        "running": values[1],
        "workers": values[2],
        "desired": values[3],
        "reason": entry["reason"][:300],
    }
    with r.pipeline(transaction=False) as p:
        p.rpush(key, json.dumps(sample))
        p.ltrim(key, -SAMPLES_KEPT, -1)
        p.execute()


def samples(r: redis.Redis, service: str, since: float) -> list[dict[str, Any]]:
    """Chart samples newer than ``since``, oldest first (a binary search would do; an hour is small)."""
    out = [json.loads(x) for x in r.lrange(keys.samples(service), 0, -1)]
    return [s for s in out if s["t"] >= since]


def recent(r: redis.Redis, service: str, n: int = 20) -> list[dict[str, Any]]:
    """The ``n`` newest decisions of ``service``, newest first."""
    return [json.loads(x) for x in r.lrange(keys.decisions(service), 0, n - 1)]


def _metrics(service: str, entry: dict[str, Any]) -> None:
    inputs = entry["inputs"]
    WAITING.labels(service).set(inputs["waiting"])
    RUNNING.labels(service).set(inputs["running"])
    for state in STATES:
        WORKERS.labels(service, state).set(inputs["workers"].get(state, 0))
    DESIRED.labels(service).set(entry["desired"])
    STANDBY.labels(service).set(entry["standby"])
    DECISIONS.labels(service, entry["rule"]).inc()
    for action in entry["actions"]:
        ACTIONS.labels(service, action.split(" ", 1)[0]).inc()
    TICK.labels(service).observe(entry["duration_ms"] / 1000)


def by_state(views: Any) -> dict[str, int]:
    """Workers per state, as a decision's inputs record them."""
    out: dict[str, int] = {}
    for v in views:
        out[v.state] = out.get(v.state, 0) + 1
    return out
