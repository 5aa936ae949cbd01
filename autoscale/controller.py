"""The autoscaler loop: observe -> :func:`autoscale.policy.decide` -> act, per service, per tick.

A tick runs every ``settings.poll_interval`` (0.5 s) and at once when a put is announced on
``keys.enqueue_channel()``, so a task arriving at zero workers starts one without waiting for the
poll. Spawns, stops, drains and control calls are queued to :mod:`autoscale.actions` and carried
out off the loop, so a tick that forks costs what one that does not. Only the leader
(``autoscale/leader.py``) acts; a second instance waits as a hot standby
and, when it takes over, first adopts the running workers of the old one.

What is scaled is a list of :class:`~autoscale.targets.Target` read every tick
(``autoscale/targets.py``); what is read about each comes through the interfaces of
``autoscale/metrics/base.py``, and what is done through ``autoscale/backends/base.py``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import redis
from redis.client import PubSub

from app.core import keys
from app.core.gpu import GpuSnapshot
from app.queue import decisions as history
from app.queue import put as inqueue
from autoscale import durations
from autoscale.actions import Actions, is_placeholder, with_queued
from autoscale.backends.base import WorkerBackend, WorkerHandle
from autoscale.crashloop import CrashLoops
from autoscale.leader import Fenced, Leadership
from autoscale.metrics.base import GpuSource, QueueDepth, WorkerObserver, Workers
from autoscale.metrics.gpu import with_gpu
from autoscale.policy import CONSUMING, Decision, Observation, PolicyState, WorkerView, decide, fresh_state
from autoscale.rolling import Rollout, outdated
from autoscale.scalein import Control
from autoscale.targets import GONE, Target

__all__ = ["Controller"]

log = logging.getLogger(__name__)

Entry = dict[str, Any]  # one decision record, JSON as app.queue.decisions stores it
T = TypeVar("T")


@dataclass
class Controller:
    """Observe, decide and act for every target; see the module docstring."""

    r: redis.Redis
    backend: WorkerBackend
    depth: QueueDepth  # autoscale/metrics/base.py: the seams the controller reads
    observer: WorkerObserver
    control: Control
    targets: Callable[[], list[Target]]
    poll_interval: float = 0.5
    decisions_kept: int = 200
    gpu: GpuSource | None = None  # None: GPU features off
    states: dict[str, PolicyState] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)  # standby workers activated before they were ready
    # service -> unowned draining workers told to shut down
    shutdown_sent: dict[str, set[str]] = field(default_factory=dict)
    wake_at: float | None = None  # monotonic: tick then even if before the next poll (grace ends)
    rollout: Rollout = field(default_factory=Rollout)  # rolling updates after a redeploy (autoscale/rolling.py)
    recover: Callable[[], object] | None = None  # re-enqueue requests whose worker died (app/queue/recovery.py)
    recover_every: float = 2.0
    _recovered_at: float = 0.0
    crashloops: CrashLoops | None = None  # crash-loop backoff (autoscale/crashloop.py); built on first tick
    # measured worker start times (wait-target mode)
    starts: durations.StartTimes = field(default_factory=durations.StartTimes)
    # (worker, service): requeue a confirmed-dead worker's requests (app/queue/recovery.py)
    requeue_dead: Callable[[str, str], object] | None = None
    # spawns/stops/drains, carried out off the loop (autoscale/actions.py)
    actions: Actions = field(default_factory=Actions)
    # wakes the loop before its next poll (a worker died)
    _poke: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.actions.term = lambda: self.backend.fence.term if self.backend.fence is not None else 0
        self.backend.on_exit = self.worker_exited

    # -- one tick ----------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> list[Entry]:
        """Observe all targets, decide and act on each; returns the decision entries."""
        now = time.time() if now is None else now
        self.actions.raise_if_fenced()  # an action of this term was refused off the loop: stand by, as inline
        self.actions.pause()
        try:
            return self._tick(now)
        finally:
            self.actions.resume()

    def _tick(self, now: float) -> list[Entry]:
        self.pending = self.actions.resolve(self.pending)  # standby activated while its spawn was queued
        targets = self._with_leftovers(self.targets())
        seen: list[tuple[Target, float, list[WorkerHandle], Workers, int]] = []
        for t in targets:
            t0 = time.perf_counter()
            try:
                # read before list(): a spawn ending in between is seen once at least
                queued = self.actions.pending_spawns(t.service)
                handles = self.backend.list(t.service)
                observed = self.observer.observe(t.service, handles, self.pending)
                workers = with_queued(observed, queued, handles, self.pending)
                seen.append((t, t0, handles, workers, sum(self.depth.waiting(q) for q in t.queues)))
            except redis.RedisError:
                raise
            except Exception:  # noqa: BLE001 - one service's trouble must not stop the others
                log.exception("%s: cannot observe; skipped this tick", t.service)
        self.pending &= {v.name for *_, w, _ in seen for v in w.views}  # forget standby workers that died
        snap = self._gpu_snapshot([w for t, _, _, w, _ in seen if t.cfg.gpu_per_worker > 0])
        entries = []
        for t, t0, handles, workers, waiting in seen:
            try:
                entries.append(self.step(t, t0, handles, workers, waiting, now, snap))
            except (redis.RedisError, Fenced):
                raise
            except Exception:  # noqa: BLE001
                log.exception("%s: cannot act; skipped this tick", t.service)
        self.wake_at = self._grace_deadline(targets, now)
        return entries

    def _grace_deadline(self, targets: list[Target], now: float) -> float | None:
        """Monotonic time at which a service's onZero grace ends, so to_zero fires on time, not a tick late."""
        ends = [st.zero_since + t.cfg.scale_down_grace for t in targets
                if (st := self.states.get(t.service)) and st.zero_since is not None and st.current > 0]
        return time.monotonic() + max(min(ends) - now, 0.0) + 0.001 if ends else None

    def step(self, t: Target, t0: float, handles: list[WorkerHandle], workers: Workers, waiting: int, now: float,
             snap: GpuSnapshot | None = None) -> Entry:
        """Decide for one target and queue the actions; returns the decision entry it recorded."""
        everyone, rolling = workers, self.rollout.hidden(t.service, t.spec_hash, workers)
        if rolling is not None:  # the policy does not see it: it starts the replacement
            workers = replace(workers, views=tuple(v for v in workers.views if v.name != rolling))
        views, free_gpus = workers.views, None
        if snap is not None and t.cfg.gpu_per_worker > 0:
            views, free_gpus = with_gpu(views, snap), snap.free_gpus()
        obs = Observation(waiting=waiting, running=workers.running, workers=views, free_gpus=free_gpus)
        obs = self._with_estimates(t, obs, handles, workers, now)
        state = self.states.get(t.service) or fresh_state(views, now)
        if t.service not in self.states or self.crashloops is None:  # first tick of a leader term: reload stored health
            self.crashloops = self.crashloops or CrashLoops(self.r)
            self.crashloops.states.pop(t.service, None)
        hold, notes = self.crashloops.observe(t.service, t.spec_hash, self.backend, bool(workers.seen), now)
        decision, self.states[t.service] = decide(obs, state, t.cfg, now)
        acted = self.act(t, decision, replace(workers, views=views), handles, snap, hold)
        actions = notes + self.actions.take_notes(t.service) + acted
        self._roll(t, decision, everyone, handles, rolling, actions)
        entry = {
            "at": now,
            "service": t.service,
            "inputs": {"waiting": waiting, "running": workers.running, "workers": history.by_state(views),
                       "free_gpus": free_gpus},
            "desired": decision.desired,
            "standby": decision.standby,
            "reason": decision.reason + (f"; crash-loop backoff: next start in {hold:.0f}s" if hold > 0 else ""),
            "rule": decision.rule,
            "health": self.crashloops.states[t.service].health,
            "actions": actions,
            "duration_ms": round((time.perf_counter() - t0) * 1000, 3),
        }
        history.record(self.r, t.service, entry, self.decisions_kept)
        return entry

    def act(self, t: Target, d: Decision, workers: Workers, handles: list[WorkerHandle],
            snap: GpuSnapshot | None = None, hold: float = 0.0) -> list[str]:
        """Make the pool match ``d``: finish drains, drain victims, activate standby, spawn.

        No spawn while ``hold`` > 0 s (crash-loop backoff)."""
        views, owned, actions = workers.by_name(), {h.name: h for h in handles}, list[str]()
        self._check_starts(workers, handles, actions)
        self._finish_drains(t, workers, owned, actions)
        victims = {n for n in d.victims if not is_placeholder(n)}  # a queued spawn is stopped once it exists
        if not workers.complete:  # a worker did not answer (still starting): its tasks are not in the load yet
            victims = {n for n in victims if views[n].state == "standby" or not views[n].healthy}
        for name in [v for v in d.victims if v in victims]:
            self._drain(t, views[name], owned.get(name), workers, actions)
        activated = {name for name in (*d.activate, *self.pending)
                     if name in views and name not in victims and self._activate(t, name, workers, actions)}
        consuming = (sum(1 for v in views.values() if v.state in CONSUMING and v.healthy and v.name not in victims)
                     + sum(1 for n in activated if views[n].state == "standby"))
        standby = sum(1 for v in views.values()
                      if v.state == "standby" and v.healthy and v.name not in victims and v.name not in activated)
        if hold > 0:
            return actions
        # ``max`` bounds live instances, not consumers: a drained worker finishing its task (or one
        # just told to stop) still holds its process, pod and GPU, so a replacement waits for it.
        room = t.cfg.max - len(views)
        spawn_now = max(min(d.desired - consuming, room), 0)
        self._spawn(t, spawn_now, {}, snap, actions)
        room -= spawn_now
        # a replacement standby starts next tick: its start must not steal CPU from the one just activated
        if not activated:
            self._spawn(t, min(d.standby - standby, room), {"SCALEJOB_STANDBY": "1"}, snap, actions)
        return actions

    # -- actions -----------------------------------------------------------------------------
    def _roll(self, t: Target, d: Decision, workers: Workers, handles: list[WorkerHandle], rolling: str | None,
              actions: list[str]) -> None:
        """Rolling update (autoscale/rolling.py): stop outdated standby, drain the hidden worker when replaced."""
        owned = {h.name: h for h in handles}
        for name in outdated(workers, t.spec_hash, ("standby",)) if t.spec_hash else []:
            if name in owned and not owned[name].meta.get("stopping"):
                self._do(f"stop {name}", self.backend.stop, owned[name], actions,
                         f"stop {name} (standby, spec changed)")
        if rolling is None:
            return
        if not self.rollout.ready_to_drain(t.service, workers, d.desired):
            actions.append(f"roll {rolling}: waiting for its replacement")
            return
        self._drain(t, workers.by_name()[rolling], owned.get(rolling), workers, actions)
        actions.append(f"roll {self.rollout.drained_now(t.service)} (spec changed)")

    def _check_starts(self, workers: Workers, handles: list[WorkerHandle], actions: list[str]) -> None:
        """Spawns with a start deadline: confirmed once registered, reaped if they never register.

        Why here and not in the backend: only the observer knows whether a worker registered; the
        backend recorded the spawn (before forking it) and counts it as capacity until then.
        """
        now = time.time()
        for h in handles:
            start_by = float(h.meta.get("start_by") or 0)
            if not start_by:
                continue
            if h.name in workers.seen:
                self.backend.started(h)
            elif now > start_by:
                self._do(f"reap {h.name}", self.backend.abandon, h, actions, f"reap {h.name} (never registered)")

    def _finish_drains(self, t: Target, workers: Workers, owned: dict[str, WorkerHandle], actions: list[str]) -> None:
        """Warm-shutdown the draining workers whose task has ended (or that never had one).

        Why not only the ones this process drained: a leader that was killed mid scale-in leaves
        workers that no longer consume (``draining`` in the registry) but still run. The next
        leader finishes that scale-in, for adopted workers through the backend and for workers
        no backend owns (one forked just before its spawner died, one started by hand) through
        Celery's ``shutdown`` control, sent once.
        """
        sent = self.shutdown_sent.get(t.service, set()) & {v.name for v in workers.views}
        self.shutdown_sent[t.service] = sent
        for v in workers.views:
            if v.state != "draining" or v.name in workers.busy:
                continue
            h = owned.get(v.name)
            if h is not None and not h.meta.get("stopping"):
                self._do(f"stop {v.name}", self.backend.stop, h, actions)
            elif h is None and v.name not in sent:
                self._do(f"shutdown {v.name}", self.control.shutdown, v.name, actions)
                sent.add(v.name)

    def _drain(self, t: Target, v: WorkerView, h: WorkerHandle | None, workers: Workers, actions: list[str]) -> None:
        self.pending.discard(v.name)
        if v.state == "draining":
            return
        if h is not None and (v.state == "standby" or v.name not in workers.seen):
            # never consumed the service queue (or not started yet): stop now
            self._do(f"stop {v.name}", self.backend.stop, h, actions, f"stop {v.name} ({v.state})")
            return
        self.observer.mark(v.name, "draining")  # at once: the next tick must not pick it again
        if h is None:
            self._do(f"cancel {v.name}", lambda n: [self.control.cancel_consumer(q, n) for q in t.queues], v.name,
                     actions, f"drain {v.name} ({v.state})")
            return
        idle = v.state == "idle" and v.name not in workers.busy
        self._do(f"drain {v.name}", self.backend.drain, h, actions, f"drain {v.name} ({'idle' if idle else v.state})")
        if idle:  # no task: warm shutdown now (one that raced in still finishes)
            self._do(f"stop {v.name}", self.backend.stop, h, actions)

    def _activate(self, t: Target, name: str, workers: Workers, actions: list[str]) -> bool:
        """Turn a standby worker into a consumer; a not-yet-ready one is activated when it is."""
        if name not in workers.seen:
            if name not in self.pending:
                self.pending.add(name)
                actions.append(f"activate {name} (when ready)")
            return True
        self.pending.discard(name)
        self.observer.mark(name, "idle")
        self._do(f"activate {name}", lambda n: [self.control.add_consumer(q, n) for q in t.queues], name, actions)
        return True

    def _spawn(self, t: Target, n: int, env: dict[str, str], snap: GpuSnapshot | None, actions: list[str]) -> None:
        if n <= 0:
            return
        envs: list[dict[str, str]] = [{} for _ in range(n)]
        if snap is not None and t.cfg.gpu_per_worker > 0:
            envs = snap.place(n, t.cfg.gpu_per_worker)
        for extra in envs:
            token = self.actions.spawn(t.service, {**env, **extra}, self.backend.spawn)
            actions.append(f"spawn {token}" + (" (standby)" if env else ""))

    def _do(self, key: str, fn: Callable[[T], object], arg: T, actions: list[str], text: str | None = None) -> None:
        """Queue ``fn(arg)`` off the loop; the action is written to the decision only when queued now (not twice)."""
        if self.actions.do(key, lambda: fn(arg)):
            actions.append(text or key)

    def worker_exited(self, name: str, service: str) -> None:
        """The backend saw worker ``name`` and every process it started end: requeue what it held, now.

        Called from the backend's exit watcher thread, not the loop: the requeue is safe without
        the leader lock (it releases only leases still held by that dead worker) and waiting for
        the next tick would add up to a poll interval. The loop is woken to replace the worker.
        """
        try:
            if self.requeue_dead is not None:
                self.requeue_dead(name, service)
        except Exception:  # noqa: BLE001 - the lease TTL still recovers it
            log.exception("%s: cannot requeue its requests now; the lease TTL will", name)
        self._poke.set()

    # -- helpers -----------------------------------------------------------------------------
    def _with_estimates(self, t: Target, obs: Observation, handles: list[WorkerHandle], workers: Workers,
                        now: float) -> Observation:
        """Add the run times and start time a wait target plans with (the ratio rule needs neither)."""
        if t.cfg.target_wait_seconds is None:
            return obs
        start = self.starts.observe(t.service, handles, set(workers.seen), now)
        return replace(obs, run_times=durations.run_times(self.r, t.service), start_seconds=start)

    def _with_leftovers(self, targets: list[Target]) -> list[Target]:
        """Services that were undeployed but still have our workers: scale them to zero."""
        names = {t.service for t in targets}
        extra = self.backend.services() - names
        return targets + [Target(s, (keys.celery_queue(s),), GONE) for s in sorted(extra)]

    def _gpu_snapshot(self, observed: list[Workers]) -> GpuSnapshot | None:
        if self.gpu is None or not self.gpu.enabled or not observed:
            return None
        return self.gpu.snapshot([i for w in observed for i in w.infos])

    def _maybe_recover(self) -> None:
        """Lease-expiry recovery from the leader too, not only from workers.

        Why: a task killed together with its worker (``scalejob up`` past ``--stop-timeout``, a
        crash) is in no queue, so at zero workers nothing would ever start a worker to recover it.
        """
        if self.recover is not None and time.monotonic() - self._recovered_at >= self.recover_every:
            self._recovered_at = time.monotonic()
            self.recover()

    # -- the loop ----------------------------------------------------------------------------
    def run(self, leadership: Leadership, stop: threading.Event,
            on_lead: Callable[[], object] = lambda: None) -> None:
        """Tick while leader; wait as hot standby otherwise; return when ``stop`` is set."""
        pubsub = self.r.pubsub(ignore_subscribe_messages=True)
        inqueue.listen(pubsub)
        leading = False
        try:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    if leadership.hold():
                        if not leading:
                            log.info("autoscaler %s is the leader", leadership.me)
                            self.actions.reset()
                            self.states.clear()
                            on_lead()
                            leading = True
                        self.tick()
                        self._maybe_recover()
                    elif leading:
                        log.warning("autoscaler %s lost the leader lock to %s; standing by",
                                    leadership.me, leadership.holder())
                        self.actions.reset()
                        leading = False
                except Fenced as exc:  # our term ended mid-tick: a newer leader acts; we stand by
                    log.warning("autoscaler %s: %s; standing by", leadership.me, exc)
                    self.actions.reset()
                    leading = False
                except redis.RedisError as exc:
                    log.warning("autoscaler tick: Redis error: %s", exc)
                except Exception:  # noqa: BLE001 - the loop outlives any single bad tick
                    log.exception("autoscaler tick failed")
                until = started + self.poll_interval
                wake = until if self.wake_at is None or not leading else min(until, self.wake_at)
                _wait(pubsub, stop, wake, self._poke)
        finally:
            # queued work is dropped; what runs now finishes (the backend refuses spawns once it stops all)
            self.actions.reset()
            self.actions.settle(timeout=10.0)
            pubsub.close()


def _wait(pubsub: PubSub, stop: threading.Event, until: float, poke: threading.Event) -> None:
    """Sleep until ``until``, the first enqueue announcement or a ``poke``, whichever comes first."""
    while not stop.is_set():
        left = until - time.monotonic()
        if left <= 0 or poke.is_set():
            poke.clear()
            return
        try:
            if pubsub.get_message(timeout=min(left, 0.25)) is not None:
                return
        except redis.RedisError:
            time.sleep(min(left, 0.25))
