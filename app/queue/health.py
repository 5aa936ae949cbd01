"""A service's health as the autoscaler sees it: failed worker starts and the crash-loop backoff.

Owner of ``keys.service_health(service)``: one JSON document per service, written by the
autoscaler leader when a start fails or the loop ends, read by ``scalejob status``,
``GET /api/services/{name}`` (``health``, ``last_failure``), the dashboard and the metrics.
Why in Redis and not only in the controller: the user looks at those other processes, and a
new leader must not forget a crash loop (it would restart it at full speed).

The schedule itself is :mod:`app.core.backoff` (pure); this module only stores and reads.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from prometheus_client import Counter, Gauge

from app.core import keys
from app.core.backoff import BackoffConfig, delay

FAILED_STARTS = Counter(
    "scalejob_autoscaler_failed_starts", "Workers that exited before they became ready", ["service"]
)
CRASH_LOOP = Gauge("scalejob_autoscaler_crash_loop", "1 while a service is in crash-loop backoff", ["service"])
BACKOFF = Gauge("scalejob_autoscaler_backoff_seconds", "Current crash-loop backoff delay", ["service"])

OK, CRASH_LOOP_BACKOFF = "ok", "crash_loop_backoff"
TAIL_LINES = 12


@dataclass(frozen=True)
class FailedStart:
    """One worker that exited (or was reaped) before it registered as ready."""

    service: str
    worker: str
    at: float
    exit_code: int | None  # None when not known (forked from the template, or killed by us)
    reason: str  # one line a user can act on
    output: tuple[str, ...] = field(default_factory=tuple)  # the last lines of its log


@dataclass
class Health:
    """What is stored per service (see the module docstring)."""

    health: str = OK
    failures: int = 0
    backoff_until: float = 0.0
    spec_hash: str = ""
    last_failure: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def log_tail(path: str | Path, lines: int = TAIL_LINES, max_bytes: int = 16384) -> tuple[str, ...]:
    """The last non-empty lines of a worker's log (bounded read: logs can be large)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            text = f.read().decode(errors="replace")
    except OSError:
        return ()
    return tuple(line.rstrip()[:500] for line in text.splitlines() if line.strip())[-lines:]


def failed_by_itself(service: str, exit_code: int | None, output: tuple[str, ...]) -> bool:
    """Whether a worker that ended before it was ready failed on its own (counts toward the backoff).

    Yes when it exited with a positive code, or said why (``run_worker`` prints ``scalejob worker
    <service>: ...`` for a failed init command or a user app that never opened its port). No when
    a signal ended it (a negative code, or no code and no such line): a worker killed from
    outside (OOM killer, an operator, the chaos tests) is replaced at once, as before.
    """
    if exit_code is not None:
        return exit_code > 0
    return any(line.startswith(f"scalejob worker {service}: ") for line in output)


def reason_from(service: str, exit_code: int | None, output: tuple[str, ...]) -> str:
    """One line: the worker's own error message when it printed one, else its last line."""
    prefix = f"scalejob worker {service}: "
    said = [line[len(prefix):] for line in output if line.startswith(prefix)]
    text = (said[-1] if said else (output[-1] if output else "no output")).rstrip(":")
    code = f"exit code {exit_code}: " if exit_code is not None else ""
    return f"{code}{text}"


def get(r: redis.Redis, service: str) -> Health:
    raw = r.get(keys.service_health(service))
    if not raw:
        return Health()
    data = json.loads(raw)
    return Health(**{k: data[k] for k in Health.__dataclass_fields__ if k in data})


def view(r: redis.Redis, service: str, now: float | None = None) -> dict[str, Any]:
    """The health as the API and ``status -o json`` show it, with ``backoff_left`` in seconds."""
    h = get(r, service)
    now = time.time() if now is None else now
    out = asdict(h)
    out.pop("spec_hash", None)
    out["backoff_left"] = round(max(0.0, h.backoff_until - now), 1) if h.health != OK else 0.0
    return out


def failed(r: redis.Redis, h: Health, f: FailedStart, spec_hash: str, cfg: BackoffConfig = BackoffConfig()) -> Health:
    """Count one failed start and store the new backoff; returns the new health."""
    failures = h.failures + 1
    new = Health(
        CRASH_LOOP_BACKOFF,
        failures,
        f.at + delay(failures, cfg),
        spec_hash,
        {"at": f.at, "worker": f.worker, "exit_code": f.exit_code, "reason": f.reason, "output": list(f.output)},
    )
    r.set(keys.service_health(f.service), new.to_json())
    FAILED_STARTS.labels(f.service).inc()
    _gauges(f.service, new, cfg)
    return new


def reset(r: redis.Redis, service: str, h: Health, spec_hash: str) -> Health:
    """The loop is over (a worker stayed ready, or a new spec): back to ok, last failure kept for reference."""
    new = Health(OK, 0, 0.0, spec_hash, h.last_failure)
    r.set(keys.service_health(service), new.to_json())
    _gauges(service, new)
    return new


def forget(r: redis.Redis, service: str) -> None:
    """Drop the service's health (``r`` may be a pipeline: services.remove deletes it with the spec)."""
    r.delete(keys.service_health(service))


def _gauges(service: str, h: Health, cfg: BackoffConfig = BackoffConfig()) -> None:
    CRASH_LOOP.labels(service).set(1 if h.health != OK else 0)
    BACKOFF.labels(service).set(delay(h.failures, cfg))
