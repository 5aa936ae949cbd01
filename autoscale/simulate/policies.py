"""The policies the simulator replays: scalejob's own, and models of what people run Celery with.

- **scalejob** runs exactly :func:`autoscale.policy.decide` (EAS ``avg_waiting_length`` or the
  ``target_wait_seconds`` rule), ticking every 0.5 s and at once on an enqueue; it drains victims
  (a busy one finishes its task).
- **KEDA** (Redis list scaler) with KEDA's and Kubernetes' defaults, each checked against the
  KEDA docs (ScaledObject spec, Redis Lists scaler): ``listLength`` 5 (the documented example
  value; the scaler's target per replica), ``pollingInterval`` 30 s, ``cooldownPeriod`` 300 s,
  activation 0 -> 1 at a poll that sees a non-empty list; from 1 to N the HPA it creates: 15 s
  sync, ``ceil(list length / listLength)`` with a 10% tolerance, scale-up at most max(+4, x2) per
  sync, 300 s scale-down stabilization window. The list holds *waiting* tasks only (a task a worker
  took has left it; prefetch off).
- **HPA** on waiting + running (a custom metric) with the same HPA defaults, never below one.

Kubernetes picks the pods to remove without regard to work (not-ready ones, then the newest): a
busy pod gets SIGTERM, ``grace`` seconds (30 s by default), then SIGKILL, and its task goes back
to the queue only after the broker's redelivery delay (Celery's Redis transport:
``visibility_timeout``, 3600 s by default). Every row is labelled with the settings it ran with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Protocol

from autoscale.policy import AutoscalerConfig, Decision, Observation, PolicyState, decide

KEDA_LIST_LENGTH = 5  # Redis list scaler listLength (KEDA docs)
KEDA_POLL = 30.0  # ScaledObject pollingInterval default (s)
KEDA_COOLDOWN = 300.0  # ScaledObject cooldownPeriod default (s)
HPA_SYNC = 15.0  # kube-controller-manager --horizontal-pod-autoscaler-sync-period default (s)
HPA_WINDOW = 300.0  # HPA behavior.scaleDown.stabilizationWindowSeconds default (s)


class Policy(Protocol):
    cfg: AutoscalerConfig  # its min workers are up at t=0
    name: str
    period: float  # seconds between ticks
    wake_on_enqueue: bool  # an enqueue wakes the loop at once (scalejob's pub/sub)
    drains: bool  # busy victims finish their task; else they get SIGTERM + grace

    def decide(self, obs: Observation, now: float) -> Decision: ...

    def reset(self, workers: int) -> None:
        """Start as a controller would that adopted ``workers`` running workers."""


@dataclass
class ScalejobPolicy:
    """scalejob's policy, :func:`autoscale.policy.decide`, with its state kept between ticks."""

    cfg: AutoscalerConfig
    period: float = 0.5
    name: str = "scalejob"
    wake_on_enqueue: bool = True
    drains: bool = True
    state: PolicyState = field(default_factory=PolicyState)

    def decide(self, obs: Observation, now: float) -> Decision:
        d, self.state = decide(obs, self.state, self.cfg, now)
        return d

    def reset(self, workers: int) -> None:
        self.state = PolicyState(current=workers)


@dataclass
class HpaPolicy:
    """The Kubernetes HPA algorithm with its defaults, optionally fronted by KEDA's activation."""

    cfg: AutoscalerConfig  # min, max; avg_waiting_length is the HPA's target value per replica
    name: str = "HPA"
    period: float = HPA_SYNC
    window: float = HPA_WINDOW
    tolerance: float = 0.1
    waiting_only: bool = False  # KEDA's Redis list scaler sees the list length, not running tasks
    keda_poll: float | None = None  # KEDA pollingInterval; None = plain HPA (never below 1)
    cooldown: float = KEDA_COOLDOWN
    wake_on_enqueue: bool = False
    drains: bool = False
    current: int = 0
    history: list[tuple[float, int]] = field(default_factory=list)
    last_active: float = -math.inf
    next_poll: float = 0.0

    def reset(self, workers: int) -> None:
        self.current, self.history, self.last_active, self.next_poll = workers, [], -math.inf, 0.0

    def decide(self, obs: Observation, now: float) -> Decision:
        metric = obs.waiting if self.waiting_only else obs.waiting + obs.running
        target, cur = self.cfg.avg_waiting_length, self.current
        new, rule = cur, "hold"
        if self.keda_poll is not None and now + 1e-9 >= self.next_poll:  # KEDA's own poll
            self.next_poll = now + self.keda_poll
            if obs.waiting > 0:
                self.last_active = now
            if cur == 0 and obs.waiting > 0:
                new, rule = max(self.cfg.min, 1), "keda_activate"
            elif cur > 0 and self.cfg.min == 0 and now - self.last_active >= self.cooldown:
                new, rule = 0, "keda_cooldown"
        if cur > 0 and rule == "hold":  # the HPA's sync
            ratio = metric / (target * cur)
            rec = cur if abs(ratio - 1) <= self.tolerance else math.ceil(metric / target)
            rec = min(max(rec, self.cfg.min, 1), self.cfg.max)
            self.history = [(t, r) for t, r in self.history if t > now - self.window] + [(now, rec)]
            down = max(r for _, r in self.history)
            if rec > cur:
                new, rule = min(rec, max(2 * cur, cur + 4)), "scale_up"
            elif down < cur:
                new, rule = down, "scale_down"
        if self.keda_poll is None:  # a plain HPA never goes below one replica
            new = max(new, 1)
        self.current = new
        consuming = [w for w in obs.workers if w.state in ("starting", "idle", "busy")]
        # the ReplicaSet removes not-ready pods first, then the newest: busy or not
        order = ([w for w in reversed(consuming) if w.state == "starting"]
                 + [w for w in reversed(consuming) if w.state != "starting"])
        victims = tuple(w.name for w in order[: max(len(consuming) - new, 0)])
        return Decision(new, 0, f"{self.name}: metric {metric} / target {target:g}", rule, victims)


def keda_policy(cfg: AutoscalerConfig, list_length: float = KEDA_LIST_LENGTH) -> HpaPolicy:
    """KEDA's Redis list scaler over the HPA, all defaults but ``listLength``; the name says which."""
    label = f"KEDA listLength {list_length:g}" + (" (defaults)" if list_length == KEDA_LIST_LENGTH else "")
    return HpaPolicy(replace(cfg, avg_waiting_length=list_length), name=label, waiting_only=True, keda_poll=KEDA_POLL)


def hpa_policy(cfg: AutoscalerConfig, target: float | None = None) -> HpaPolicy:
    """A plain HPA on waiting + running with target value ``target`` per replica (default: cfg's)."""
    t = cfg.avg_waiting_length if target is None else target
    return HpaPolicy(replace(cfg, min=max(cfg.min, 1), avg_waiting_length=t), name=f"HPA target {t:g}")


def scalejob_label(cfg: AutoscalerConfig) -> str:
    """``scalejob target 60 s`` or ``scalejob avg_waiting_length 2``."""
    if cfg.target_wait_seconds is not None:
        return f"scalejob target {cfg.target_wait_seconds:g} s"
    return f"scalejob avg_waiting_length {cfg.avg_waiting_length:g}"
