"""Spawns, stops, drains and remote-control calls, carried out off the decision loop.

Why: a spawn forks a process (25-320 ms measured from the template, more on a loaded machine) and
a drain or an activation waits for the worker's reply to a Celery control call (up to 1 s). Done
inline they delayed every other service's decision and the reaction to the next put by as much.
The controller now queues them here and goes on; two threads carry them out in order: one lane
for spawns, one for everything else (so an activation never waits behind a fork).

Accounting: a queued spawn is *pending* until the backend lists the process it started. The
controller shows each one to the policy as a ``starting`` worker named ``+<service>#<n>`` (a
:class:`PendingSpawn`), so the next tick neither spawns it again nor lets ``max`` be exceeded,
and a standby activated before it even forked is activated under its real name once known.
A control action is queued once per key (``stop NAME``): a tick that comes before it ran does
not queue it twice.

Fencing (autoscale/leader.py) is unchanged: every spawn, drain and stop still goes through the
backend's fenced path, and each action carries the term it was decided in; one decided in an
earlier term is dropped, never run. A :class:`~autoscale.leader.Fenced` raised by an action
empties both lanes and is raised again by the controller at its next tick, so the leader stands
by exactly as when a tick was refused inline.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from autoscale.backends.base import BackendError, WorkerHandle
from autoscale.leader import Fenced
from autoscale.metrics.base import Workers
from autoscale.metrics.registry import GpuHolder, merge

log = logging.getLogger(__name__)

PLACEHOLDER = "+"  # first character of a pending spawn's name; never a real worker's


@dataclass
class PendingSpawn:
    """A spawn decided but not yet listed by the backend."""

    service: str
    token: str  # the placeholder's name: "+<service>#<n>"
    env: dict[str, str]
    term: int  # the leader term that decided it
    name: str | None = None  # the real worker name, once the backend started it

    def handle(self) -> WorkerHandle:
        """How the placeholder enters the observation (a ``starting`` or ``standby`` process, with its GPUs)."""
        standby = self.env.get("SCALEJOB_STANDBY", "") not in ("", "0")
        meta = {"standby": "1" if standby else "", "gpus": self.env.get("CUDA_VISIBLE_DEVICES", "")}
        return WorkerHandle(self.token, self.service, meta=meta)


def is_placeholder(name: str) -> bool:
    return name.startswith(PLACEHOLDER)


@dataclass
class _Item:
    key: str
    term: int
    run: Callable[[], None]
    dropped: Callable[[], None] = lambda: None


class _Lane:
    """One thread running queued items in order (started on first use)."""

    def __init__(self, name: str, owner: Actions) -> None:
        self.name, self.owner = name, owner
        self.items: deque[_Item] = deque()
        self.busy = False
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None

    def submit(self, item: _Item) -> None:
        with self.cond:
            self.items.append(item)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self.thread.start()
            self.cond.notify_all()

    def clear(self) -> list[_Item]:
        with self.cond:
            out = list(self.items)
            self.items.clear()
            self.cond.notify_all()
            return out

    def idle(self) -> bool:
        return not self.items and not self.busy

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.items:
                    self.busy = False
                    self.cond.notify_all()
                    self.cond.wait()
                item, self.busy = self.items.popleft(), True
            self.owner._open.wait(1.0)  # a tick is deciding: let it finish first (bounded: never stuck)
            self.owner._run(item)


@dataclass
class Actions:
    """The controller's action queue: see the module docstring."""

    term: Callable[[], int] = lambda: 0  # the leader term now (0: unfenced)
    pending: dict[str, list[PendingSpawn]] = field(default_factory=dict)  # service -> spawns not yet listed
    fenced: Fenced | None = None  # set by an action the fence refused; raised by the next tick
    _keys: set[str] = field(default_factory=set)
    _notes: dict[str, list[str]] = field(default_factory=dict)
    _started: dict[str, str] = field(default_factory=dict)  # placeholder -> real name (standby activation)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _count: itertools.count = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self._spawns, self._control = _Lane("scalejob-spawn", self), _Lane("scalejob-control", self)
        self._open = threading.Event()  # cleared while a tick runs: actions start when it ends (no CPU race with it)
        self._open.set()

    def pause(self) -> None:
        """A tick begins: what it queues starts when it ends (:meth:`resume`), not in the middle of it."""
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    # -- queueing (the decision loop) ------------------------------------------------------------
    def spawn(self, service: str, env: dict[str, str], start: Callable[[str, dict[str, str]], WorkerHandle]) -> str:
        """Queue ``start(service, env)``; returns the placeholder name the policy sees until it ran."""
        p = PendingSpawn(service, f"{PLACEHOLDER}{service}#{next(self._count)}", dict(env), self.term())
        with self._lock:
            self.pending.setdefault(service, []).append(p)

        def run() -> None:
            try:
                p.name = start(service, p.env).name
                with self._lock:
                    self._started[p.token] = p.name
            except BackendError as exc:
                log.error("%s", exc)
                self._note(service, f"spawn-failed {service}")
            finally:
                self._unpend(p)

        self._spawns.submit(_Item(p.token, p.term, run, lambda: self._unpend(p)))
        return p.token

    def do(self, key: str, fn: Callable[[], object]) -> bool:
        """Queue ``fn`` under ``key`` unless one with that key is still queued; True when queued now."""
        with self._lock:
            if key in self._keys:
                return False
            self._keys.add(key)
        self._control.submit(_Item(key, self.term(), lambda: (fn(), None)[1]))
        return True

    # -- what the next tick reads ------------------------------------------------------------------
    def pending_spawns(self, service: str) -> list[PendingSpawn]:
        with self._lock:
            return list(self.pending.get(service, ()))

    def take_notes(self, service: str) -> list[str]:
        """Outcomes of finished actions worth a line in the next decision (``spawn-failed SERVICE``)."""
        with self._lock:
            return self._notes.pop(service, [])

    def resolve(self, names: set[str]) -> set[str]:
        """``names`` with each placeholder whose spawn ran replaced by the real worker name.

        Called once at the start of a tick; the names of spawns that ran since are forgotten
        after it (only a standby activated while pending needs its real name)."""
        with self._lock:
            out = {self._started.get(n, n) for n in names}
            self._started.clear()
            return out

    def raise_if_fenced(self) -> None:
        if self.fenced is not None:
            exc, self.fenced = self.fenced, None
            raise exc

    # -- lifecycle --------------------------------------------------------------------------------
    def reset(self) -> None:
        """Drop everything queued (a leader term began or ended: those decisions are not ours to carry out)."""
        for lane in (self._spawns, self._control):
            for item in lane.clear():
                self._discard(item)
        with self._lock:
            self._started.clear()
        self.fenced = None

    def settle(self, timeout: float = 30.0) -> bool:
        """Wait until both lanes are idle (tests and benchmarks; the loop never waits)."""
        for lane in (self._spawns, self._control):
            with lane.cond:
                if not lane.cond.wait_for(lane.idle, timeout):
                    return False
        return True

    # -- the lanes' side --------------------------------------------------------------------------
    def _run(self, item: _Item) -> None:
        try:
            if item.term != self.term():
                log.warning("%s decided in leader term %d dropped: the term now is %d",
                            item.key, item.term, self.term())
                item.dropped()
                return
            item.run()
        except Fenced as exc:
            self.fenced = exc
            item.dropped()
            for lane in (self._spawns, self._control):
                for left in lane.clear():
                    self._discard(left)
        except Exception:  # noqa: BLE001 - one failed action must not stop the lane
            log.exception("%s failed", item.key)
        finally:
            with self._lock:
                self._keys.discard(item.key)

    def _discard(self, item: _Item) -> None:
        item.dropped()
        with self._lock:
            self._keys.discard(item.key)

    def _unpend(self, p: PendingSpawn) -> None:
        with self._lock:
            left = [x for x in self.pending.get(p.service, ()) if x is not p]
            if left:
                self.pending[p.service] = left
            else:
                self.pending.pop(p.service, None)

    def _note(self, service: str, note: str) -> None:
        with self._lock:
            self._notes.setdefault(service, []).append(note)


def with_queued(workers: Workers, queued: list[PendingSpawn], handles: list[WorkerHandle],
                activating: set[str]) -> Workers:
    """``workers`` plus a ``starting`` (or ``standby``) view for each queued spawn the backend does not list yet.

    Why: the policy and ``max`` must count a spawn from the moment it is decided, or the tick
    after it would spawn again; the GPUs it was placed on count as held (``infos``).
    """
    listed = {h.name for h in handles}
    extra = [p.handle() for p in queued if p.name is None or p.name not in listed]
    if not extra:
        return workers
    holders = tuple(GpuHolder(h.name, 0, h.meta["gpus"]) for h in extra)
    return replace(workers, views=merge(workers.views, extra, activating), infos=workers.infos + holders)
