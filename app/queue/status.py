"""What ``scalejob status`` and the API show: per service, the queue, the workers by state and the last decision.

Everything comes from what the parts already publish: the broker depth (``app.queue.tenants``), the
worker registry (``app/queue/workers.py``: state, running request, GPUs, spec hash) and the
autoscaler's decision history (``app/queue/decisions.py``). Plain data here; the tables are drawn
by ``app/cli/status.py``.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from app.core.specs import ServiceSpec
from app.queue import decisions as history
from app.queue import depth, frontends, health, services, tenants
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


def status_data(r: redis.Redis, now: float | None = None) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (``scalejob status -o json`` prints it)."""
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
        h = service_health(r, specs[name], now)
        failing = ""
        if h["health"] != health.OK and h["last_failure"]:
            failing = f"{h['last_failure']['reason']} ({h['failures']} failed starts, next in {h['backoff_left']:.0f}s)"
        fe = h["front_end"]
        if fe and fe["state"] == "backoff" and fe.get("last_failure"):
            failing = "; ".join(
                x
                for x in (failing, f"front end restarting in {fe['restart_in']:.0f}s: {fe['last_failure']['reason']}")
                if x
            )
        out["services"].append(
            {
                "service": name,
                "type": specs[name].metadata.type,
                "waiting": tenants.waiting(r, name),
                "running": sum(len(w.running) for w in workers),
                "workers": states,
                "desired": desired,
                "last_decision": when,
                "reason": reason,
                "health": h["health"],
                "failing": failing,
                **h,  # failures, backoff_left, last_failure, front_end
            }
        )
        current = services.spec_hash(specs[name])
        for w in workers:
            out["workers"].append(
                {
                    "worker": w.name,
                    "service": name,
                    "state": w.state,
                    "task": w.running[0] if w.running else "-",
                    "up": _ago(now - w.started_at).replace(" ago", ""),
                    "gpu": gpu_label(w.gpus),
                    "spec": "current" if w.spec_hash in ("", current) else "outdated (rolls after its task)",
                }
            )
    return out


def service_stats(r: redis.Redis, name: str) -> dict[str, Any]:
    """Live numbers of one service: waiting, running, workers by state, the autoscaler's last word."""
    workers = registry.list_workers(r, name)
    by_state: dict[str, int] = {}
    for w in workers:
        by_state[w.state] = by_state.get(w.state, 0) + 1
    try:
        waiting: int | None = depth.waiting(name)
    except Exception:  # noqa: BLE001 - broker unreachable: say so instead of failing the call
        waiting = None
    newest = history.recent(r, name, 1)
    decision = newest[0] if newest else None
    return {
        "waiting": waiting,
        "running": sum(len(w.running) for w in workers),
        "workers": by_state,
        "desired": decision.get("desired") if decision else None,
        "last_decision": decision,
    }


def service_health(r: redis.Redis, spec: ServiceSpec, now: float | None = None) -> dict[str, Any]:
    """``health`` (ok | crash_loop_backoff), ``failures``, ``backoff_left``, ``last_failure``
    (app/queue/health.py) and ``front_end`` (app/queue/frontends.py) of a deployed spec."""
    h = health.view(r, spec.name, now)
    fe = frontends.view(r, spec)
    return {
        "health": h["health"],
        "failures": h["failures"],
        "backoff_left": h["backoff_left"],
        "last_failure": h["last_failure"],
        "front_end": fe,
    }
