"""What the dashboard shows, as plain JSON-able data (no HTTP here; :mod:`app.ui.routes` serves it).

Every function reads Redis in a bounded number of round trips so the page stays cheap at
1,000 waiting requests and 50 workers: lists are paged, workers come from one registry
pipeline, request records are fetched only for the page (and only the running ones of the
workers shown). Nothing returned here ever contains a token.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from app.api import auth
from app.core.gpu import GpuMonitor, GpuSnapshot
from app.core.settings import get_settings
from app.core.specs import ServiceSpec
from app.queue import decisions, records, services, status
from app.queue.workers import WorkerInfo, list_workers

log = logging.getLogger("scalejob.ui")

HISTORY_SECONDS = 3600
CONSUMING = ("starting", "idle", "busy", "draining")


@dataclass(frozen=True)
class Viewer:
    """Who is looking: the admin (every service) or one service's token (maybe bound to a tenant)."""

    admin: bool
    services: tuple[str, ...]
    tenant: str | None = None

    def may_see(self, service: str) -> bool:
        return self.admin or service in self.services


def viewer(r: redis.Redis, header: str | None) -> Viewer:
    """The services an ``Authorization`` header opens; raises :class:`auth.Unauthorized`.

    A service token is tried against each deployed spec (a handful, not thousands), so the page
    can list "my services" without the token naming its service.
    """
    admin_token = get_settings().admin_token.get_secret_value()
    specs = services.all_specs(r)
    try:
        auth.authenticate(r, header, admin_token, None)
        return Viewer(admin=True, services=tuple(sorted(specs)))
    except auth.Unauthorized:
        if auth.token_from_header(header) is None:
            raise
    seen, tenant = [], None
    for name, spec in sorted(specs.items()):
        try:
            principal = auth.authenticate(r, header, admin_token, spec)
        except auth.Unauthorized:
            continue
        seen.append(name)
        tenant = tenant or principal.tenant
    if not seen:
        raise auth.Unauthorized("invalid token")
    return Viewer(admin=False, services=tuple(seen), tenant=tenant)


def visible_specs(r: redis.Redis, who: Viewer) -> dict[str, ServiceSpec]:
    """The viewer's specs, read fresh (services deployed after login appear for the admin)."""
    return {n: s for n, s in sorted(services.all_specs(r).items()) if who.may_see(n)}


def service_row(r: redis.Redis, name: str, spec: ServiceSpec) -> dict[str, Any]:
    """One line of the live services table."""
    s = status.service_stats(r, name)
    last = s["last_decision"] or {}
    h = status.service_health(r, spec)
    fe = h["front_end"]
    return {
        "name": name,
        "type": spec.metadata.type,
        "health": h["health"],
        "failing": _failing(h),
        "front_end": fe and {"state": fe["state"], "restarts": fe.get("restarts", 0),
                             "reason": (fe.get("last_failure") or {}).get("reason")},
        "waiting": s["waiting"],
        "running": s["running"],
        "workers": {state: s["workers"].get(state, 0) for state in (*CONSUMING, "standby")},
        "desired": s["desired"],
        "min": spec.autoscaler.min,
        "max": spec.autoscaler.max,
        "rule": last.get("rule"),
        "reason": last.get("reason_now") or last.get("reason"),
        "decided_at": last.get("last_at") or last.get("at"),
    }


def _failing(h: dict[str, Any]) -> str | None:
    """One line for the red banner of a service in crash-loop backoff (None when healthy)."""
    if h["health"] == "ok" or not h["last_failure"]:
        return None
    return (f"Crash-loop backoff: {h['failures']} worker start(s) failed; next try in {h['backoff_left']:.0f}s. "
            f"Last failure: {h['last_failure']['reason']}")


def service_rows(r: redis.Redis, who: Viewer) -> dict[str, dict[str, Any]]:
    return {name: service_row(r, name, spec) for name, spec in visible_specs(r, who).items()}


def service_detail(r: redis.Redis, name: str, spec: ServiceSpec) -> dict[str, Any]:
    """Spec (token masked) and the autoscaler config, read-only."""

    return {
        "name": name,
        "spec": services.public(r, spec),
        "autoscaler": spec.autoscaler.model_dump(),
        "task_types": spec.allowed_task_types(),
        "row": service_row(r, name, spec),
    }


def _workers_total(by_state: dict[str, int]) -> int:
    return sum(by_state.get(s, 0) for s in CONSUMING)


def history(r: redis.Redis, service: str, now: float | None = None, seconds: float = HISTORY_SECONDS) -> dict[str, Any]:
    """Timeline points of the last ``seconds``: the autoscaler's real samples, and its scale events.

    Points come from ``app.queue.decisions.samples`` (a sample per tick where a number changed, at
    least every 5 s). Only when there are none (an autoscaler of an older version) are they drawn
    from the decision list, where an entry stands for a stretch of ticks with the same decision
    and knows only its latest inputs. Entries that acted (spawned, drained) are scale events,
    drawn as markers with their reason.
    """
    now = time.time() if now is None else now
    since = now - seconds
    points: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    sampled = decisions.samples(r, service, since)
    for entry in reversed(decisions.recent(r, service, get_settings().decisions_kept)):  # oldest first
        at, last_at = float(entry.get("at", 0)), float(entry.get("last_at") or entry.get("at", 0))
        if last_at < since:
            continue
        if entry.get("actions"):
            events.append({"t": at, "reason": entry.get("reason", ""), "rule": entry.get("rule", ""),
                           "actions": entry["actions"]})
        if sampled:
            continue  # real samples below; a merged entry only knows its latest inputs
        inputs = entry.get("inputs") or {}
        point = {
            "waiting": inputs.get("waiting", 0),
            "running": inputs.get("running", 0),
            "workers": _workers_total(inputs.get("workers") or {}),
            "desired": entry.get("desired", 0),
            "reason": entry.get("reason_now") or entry.get("reason", ""),
        }
        for t in sorted({max(at, since), last_at}):
            points.append({"t": t, **point})
    points = sampled or points
    return {"service": service, "since": since, "now": now, "points": points, "events": events}


# --- workers and GPUs ----------------------------------------------------------------------------
class DashboardGpus:
    """NVML's view of this host for the dashboard: the monitor is built on first use, once.

    Why lazy and once: opening NVML probes the driver (slow, and it logs once when there is
    none), so an API that never shows a worker page never opens it, and one that does keeps the
    monitor (it remembers lost devices and the workers that were on them between samples).
    """

    def __init__(self, build: Callable[[], GpuMonitor] = GpuMonitor.from_system) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._monitor: GpuMonitor | None = None
        self._checked = False

    def snapshot(self, workers: list[WorkerInfo]) -> GpuSnapshot | None:
        """Devices joined with ``workers``; None without a driver (the page says "no GPU")."""
        with self._lock:
            if not self._checked:
                self._checked = True
                try:
                    monitor = self._build()
                    self._monitor = monitor if monitor.enabled else None
                except Exception as exc:  # noqa: BLE001 - no NVML or a broken driver: the page says "no GPU"
                    log.info("dashboard: GPU info off (%s)", exc)
            if self._monitor is None:
                return None
            try:
                return self._monitor.snapshot(workers)
            except Exception as exc:  # noqa: BLE001 - a driver hiccup must not break the page
                log.warning("dashboard: NVML sample failed: %s", exc)
                return None


gpus = DashboardGpus()  # the one of this process (tests swap in one over a fake NVML)


def _gpu_view(snap: GpuSnapshot | None, w: WorkerInfo) -> list[dict[str, Any]]:
    if snap is None:
        return []
    mine = set(snap.worker_devices.get(w.name, ()))
    return [
        {"index": d.index, "util": d.util, "mem_used": d.mem_used, "mem_total": d.mem_total, "healthy": d.healthy}
        for d in snap.devices
        if d.index in mine
    ]


def workers_page(r: redis.Redis, service: str, offset: int = 0, limit: int = 100, now: float | None = None,
                 tenant: str | None = None) -> dict[str, Any]:
    """Live workers of a service, with what each runs, since when, and its GPUs.

    A tenant-bound viewer sees the workers but only its own tenant's request ids (another
    tenant's running request is shown as ``{"id": null}``: busy, with nothing to follow).
    """
    now = time.time() if now is None else now
    every = list_workers(r, service)
    page = every[offset : offset + limit]
    running_ids = [rid for w in page for rid in w.running]
    known = records.started_and_tenant(r, running_ids) if running_ids else {}
    started = {rid: at for rid, (at, _) in known.items()}
    owners = {rid: owner for rid, (_, owner) in known.items()}
    snap = gpus.snapshot(page)
    rows = []
    for w in page:
        current = [{"id": rid if tenant is None or owners.get(rid) == tenant else None,
                    "for_s": round(now - began, 1) if (began := started.get(rid)) else None} for rid in w.running]
        rows.append({
            "name": w.name, "host": w.host, "pid": w.pid, "state": w.state, "running": current,
            "up_s": round(now - w.started_at, 1) if w.started_at else None,
            "gpus": _gpu_view(snap, w), "gpu_env": w.gpus,
        })
    return {"service": service, "total": len(every), "offset": offset, "limit": limit,
            "gpu_available": snap is not None, "workers": rows}


def request_row(rec: records.Record, now: float) -> dict[str, Any]:
    """A request as a list row: no payload, no result body (the request page has those)."""
    end = rec.finished_at or (now if rec.started_at else None)
    return {
        "id": rec.id, "state": rec.state, "task_type": rec.task_type, "tenant": rec.tenant,
        "progress": rec.progress, "worker": rec.worker, "queued_at": rec.queued_at,
        "duration_s": round(end - rec.started_at, 2) if end and rec.started_at else None,
        "cancel_requested": rec.cancel_requested,
    }


def requests_page(r: redis.Redis, service: str, who: Viewer, offset: int = 0, limit: int = 50,
                  now: float | None = None) -> dict[str, Any]:
    """Most recent requests of a service, newest first; a tenant-bound token sees its tenant's only."""
    now = time.time() if now is None else now
    total = records.count(r, service)
    rows = []
    for rid in records.recent(r, service, limit, offset):
        rec = records.get(r, rid)
        if rec is None or (who.tenant and rec.tenant != who.tenant):
            continue
        rows.append(request_row(rec, now))
    return {"service": service, "total": total, "offset": offset, "limit": limit, "requests": rows}


def diff_rows(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The delta the live feed sends: changed or new rows, and names gone; None if nothing changed."""
    changed = {n: row for n, row in new.items() if old.get(n) != row}
    removed = sorted(set(old) - set(new))
    if not changed and not removed:
        return None
    return {"rows": changed, "removed": removed}
