"""The autoscaling policy: a pure function from what we see to how many workers we want, and why.

No I/O and no clock reads: the controller passes the observation, the previous state and ``now``
in and gets a :class:`Decision` and the next :class:`PolicyState` back. That is what makes the
rules table-testable and lets ``scalejob simulate`` replay a trace through exactly this code.

Semantics (DESIGN.md, Autoscaling semantics), applied in this order:

1. load = waiting + running; raw = ceil(load / avg_waiting_length), or, with
   ``target_wait_seconds``, the fewest workers that start every waiting task within the target
   given the observed run times and worker start time (:mod:`autoscale.target_wait`).
2. clamp raw to [min, max].
3. stabilisation (as Kubernetes' HPA does it): scale-up follows the current recommendation at
   once; scale-down goes no lower than the highest recommendation within the window (with a
   wait target, the window is at least 0.4 worker start times: an idle worker is kept
   about as long as a new one would take to start, the break-even of keeping against restarting).
4. to zero only after ``scale_down_grace`` seconds of continuous zero load (min 0 only);
   meanwhile one worker stays.
5. optional per-tick rate limits on the step up / down.
6. the GPU cap: no more workers than the GPUs they hold plus the free ones allow.
7. warm standby: up to N extra initialised, non-consuming workers, within max and the GPU cap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from autoscale.target_wait import KEEP_IDLE, PRIOR_START, Pool, RunTimes, workers_for_target

__all__ = [
    "AutoscalerConfig", "Decision", "Observation", "PolicyState", "RunTimes", "WorkerView", "choose_victims", "decide",
]

CONSUMING = ("starting", "idle", "busy")  # states that take (or are about to take) tasks


@dataclass(frozen=True)
class WorkerView:
    """One worker as the policy sees it (the registry entry plus GPU facts)."""

    name: str
    state: str  # starting | idle | busy | draining | standby
    busy_since: float | None = None  # when its current task started
    gpu_util: float | None = None  # 0-100, None when no GPU
    healthy: bool = True


@dataclass(frozen=True)
class Observation:
    """One service at one instant; building it must cost O(workers), never O(tasks)."""

    waiting: int
    running: int
    workers: tuple[WorkerView, ...]
    free_gpus: int | None = None  # None = no GPU info / not a GPU service
    run_times: RunTimes | None = None  # recent run times of the service's tasks (wait-target mode)
    start_seconds: float | None = None  # how long a new worker takes to take its first task; None = not measured


@dataclass(frozen=True)
class AutoscalerConfig:
    """The ``autoscaler`` block of a service spec, flattened (plus ``metadata.gpu``)."""

    min: int = 1
    max: int = 10
    avg_waiting_length: float = 2
    target_wait_seconds: float | None = None  # strategies.target_wait_seconds: replaces avg_waiting_length
    scale_down_grace: float = 60  # behavior.onZero.scaleDownGracePeriodSeconds
    stabilization: float = 1  # behavior.scaleDown.stabilizationWindowSeconds
    scale_up_step: int | None = None  # behavior.scaleUp.maxStepPerTick
    scale_down_step: int | None = None  # behavior.scaleDown.maxStepPerTick
    warm_standby: int = 0  # behavior.warmStandby
    gpu_per_worker: int = 0  # metadata.gpu


@dataclass(frozen=True)
class PolicyState:
    """What the policy remembers between ticks.

    ``current`` is the last decided consuming count. A controller that starts fresh should seed it
    with the number of live consuming workers it adopts, so a restart neither scales up nor down.
    """

    history: tuple[tuple[float, int], ...] = ()  # (time, clamped recommendation) within the window
    zero_since: float | None = None
    current: int = 0


@dataclass(frozen=True)
class Decision:
    """The outcome of one tick.

    The controller turns it into actions: drain ``victims`` (idle ones first; busy ones only stop
    consuming and finish their task), turn ``activate`` standby workers into consumers
    (``add_consumer``), then spawn ``desired`` minus the healthy consuming workers left, and keep
    ``standby`` non-consuming workers warm.
    """

    desired: int  # consuming workers wanted
    standby: int  # warm standby workers wanted (initialised, not consuming)
    reason: str  # one sentence with the inputs
    # scale_up | scale_down | hold | to_zero | grace | clamp_max | clamp_min | gpu_cap | rate_limit | stabilization
    rule: str
    victims: tuple[str, ...] = ()  # workers to drain, in order
    activate: tuple[str, ...] = ()  # standby workers to turn into consumers now


def _fmt(x: float) -> str:
    return f"{x:g}"


def choose_victims(workers: tuple[WorkerView, ...], n: int) -> tuple[str, ...]:
    """The ``n`` workers to drain, best victim first.

    Draining workers are already leaving and never chosen. Workers without a task go first
    (unhealthy before healthy, standby and starting before idle, then lowest GPU utilisation), so a
    busy worker is never chosen while a non-busy one exists. Among busy workers the one whose task
    started earliest goes first (it frees its slot soonest); the most recently started is chosen
    last, only when every other busy worker is chosen too.
    """
    if n <= 0:
        return ()
    rank = {"standby": 0, "starting": 1, "idle": 2}

    def key(w: WorkerView) -> tuple:
        if w.state != "busy":
            return (0, w.healthy, rank.get(w.state, 2), w.gpu_util or 0.0, w.name)
        return (1, w.healthy, w.busy_since if w.busy_since is not None else math.inf, w.name)

    candidates = sorted((w for w in workers if w.state != "draining"), key=key)
    return tuple(w.name for w in candidates[:n])


def _pool(obs: Observation, current: int, now: float) -> Pool:
    """The consuming workers for the wait-target rule; from the counts alone when no views are given."""
    views = [w for w in obs.workers if w.healthy and w.state in CONSUMING]
    if not obs.workers:
        return Pool(busy_ages=(0.0,) * obs.running, idle=max(current - obs.running, 0), starting=0)
    ages = tuple(max(now - w.busy_since, 0.0) if w.busy_since is not None else 0.0 for w in views if w.state == "busy")
    return Pool(ages, sum(1 for w in views if w.state == "idle"), sum(1 for w in views if w.state == "starting"))


def _start(obs: Observation) -> float:
    return obs.start_seconds if obs.start_seconds is not None else PRIOR_START


def _recommend(
    obs: Observation, cfg: AutoscalerConfig, current: int = 0, now: float = 0.0
) -> tuple[int, int, str, str | None]:
    """raw and clamped recommendation, the reason text so far and the clamp rule if one bound."""
    load = obs.waiting + obs.running
    if cfg.target_wait_seconds is not None:
        pool = _pool(obs, current, now)
        raw, reason = workers_for_target(obs.waiting, pool, obs.run_times, _start(obs), cfg.target_wait_seconds)
    else:
        raw = math.ceil(load / cfg.avg_waiting_length) if load > 0 else 0
        reason = (
            f"load {load} (waiting {obs.waiting} + running {obs.running}) / avg_waiting_length "
            f"{_fmt(cfg.avg_waiting_length)} -> {raw}"
        )
    if raw > cfg.max:
        return raw, cfg.max, reason + f"; clamped to max {cfg.max}", "clamp_max"
    if raw < cfg.min:
        return raw, cfg.min, reason + f"; clamped to min {cfg.min}", "clamp_min"
    return raw, raw, reason, None


def _gpu_capacity(obs: Observation, cfg: AutoscalerConfig) -> int | None:
    """Most workers (consuming + standby) the GPUs allow, or None when there is no GPU cap."""
    if cfg.gpu_per_worker <= 0 or obs.free_gpus is None:
        return None
    holding = sum(1 for w in obs.workers if w.state != "draining")
    return holding + max(obs.free_gpus, 0) // cfg.gpu_per_worker


def decide(obs: Observation, state: PolicyState, cfg: AutoscalerConfig, now: float) -> tuple[Decision, PolicyState]:
    """Desired consuming and standby workers for one service at ``now``, why, and who to drain.

    The steps of the module docstring, in its order; each is a pure function of what the one
    before it decided, so the reason text reads in the order the rules were applied.
    """
    load = obs.waiting + obs.running
    _, rec, reason, clamp = _recommend(obs, cfg, state.current, now)  # 1. and 2.
    span = _window(obs, cfg)
    window = tuple((t, d) for t, d in state.history if t > now - span) + ((now, rec),)
    zero_since = (state.zero_since if state.zero_since is not None else now) if load == 0 else None
    draft = _stabilized(rec, reason, clamp, state.current, max(d for _, d in window), span)  # 3.
    draft = _after_grace(draft, state.current, zero_since, now, cfg.scale_down_grace)  # 4.
    draft = _rate_limited(draft, state.current, cfg)  # 5.
    cap = _gpu_capacity(obs, cfg)
    draft = _gpu_capped(draft, cap, obs, cfg)  # 6.
    standby = _standby(draft.new, cap, cfg)  # 7.
    reason = draft.reason + (f"; {standby} warm standby" if standby else "") + f" => desired {draft.new}"
    victims, activate = _plan(obs.workers, draft.new, standby)
    decision = Decision(desired=draft.new, standby=standby, reason=reason, rule=draft.rule,
                        victims=victims, activate=activate)
    return decision, replace(state, history=window, zero_since=zero_since, current=draft.new)


@dataclass(frozen=True)
class _Draft:
    """The decision between two steps: the consuming count so far, the reason text, the rule that set it."""

    new: int
    reason: str
    rule: str

    def then(self, new: int, note: str, rule: str) -> _Draft:
        """The next draft: a step set the count to ``new`` under ``rule``; ``note`` says why."""
        return _Draft(new, self.reason + note, rule)


def _stabilized(rec: int, reason: str, clamp: str | None, current: int, window_max: int, span: float) -> _Draft:
    """3. Stabilisation: up at once, down only to the window's highest recommendation."""
    if rec > current:
        return _Draft(rec, reason, clamp or "scale_up")
    new = min(window_max, current)
    if window_max > rec:
        note = f"; highest in the {_fmt(span)} s stabilization window is {window_max}"
        return _Draft(new, reason + note, "stabilization")
    return _Draft(new, reason, clamp or ("scale_down" if window_max < current else "hold"))


def _after_grace(d: _Draft, current: int, zero_since: float | None, now: float, grace: float) -> _Draft:
    """4. To zero only after ``grace`` seconds of zero load; meanwhile one worker stays."""
    if d.new != 0 or current <= 0:
        return d
    waited = now - (zero_since if zero_since is not None else now)
    if waited >= grace:
        return d.then(0, f"; zero load for {_fmt(round(waited, 3))} s >= grace {_fmt(grace)} s", "to_zero")
    return d.then(1, f"; zero load for {_fmt(round(waited, 3))} s < grace {_fmt(grace)} s, keeping 1", "grace")


def _rate_limited(d: _Draft, current: int, cfg: AutoscalerConfig) -> _Draft:
    """5. The per-tick rate limits on the step up and down."""
    if cfg.scale_up_step and d.new > current + cfg.scale_up_step:
        step = cfg.scale_up_step
        d = d.then(current + step, f"; scale-up limited to +{step} per tick", "rate_limit")
    if cfg.scale_down_step and d.new < current - cfg.scale_down_step:
        step = cfg.scale_down_step
        d = d.then(current - step, f"; scale-down limited to -{step} per tick", "rate_limit")
    return d


def _gpu_capped(d: _Draft, cap: int | None, obs: Observation, cfg: AutoscalerConfig) -> _Draft:
    """6. No more workers than the GPUs they hold plus the free ones allow."""
    if cap is None or d.new <= cap:
        return d
    return d.then(cap, f"; capped to {cap} by GPUs ({obs.free_gpus} free, {cfg.gpu_per_worker} per worker)", "gpu_cap")


def _standby(new: int, cap: int | None, cfg: AutoscalerConfig) -> int:
    """7. Warm standby workers, within ``max`` and what the GPUs leave."""
    standby = min(cfg.warm_standby, max(cfg.max - new, 0))
    return standby if cap is None else min(standby, max(cap - new, 0))


def _window(obs: Observation, cfg: AutoscalerConfig) -> float:
    """The scale-down window: the spec's, and with a wait target at least KEEP_IDLE (0.4) worker start times.

    Why: an idle worker that goes is paid again as a start when work comes back; keeping it for a
    start time is the classic break-even (ski rental). 0.4 of it measured cheaper on the traces of
    benchmarks/simulate.py at the same waits: most returns of work come soon or not for long.
    """
    return max(cfg.stabilization, KEEP_IDLE * _start(obs)) if cfg.target_wait_seconds is not None else cfg.stabilization


def _plan(workers: tuple[WorkerView, ...], desired: int, standby: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Who to drain and which standby workers to switch on so the pool matches the decision.

    Unhealthy workers are always drained (they are replaced after their task). Missing consumers
    come from standby first: that is capacity in milliseconds instead of a process start.
    """
    unhealthy = tuple(w.name for w in workers if not w.healthy and w.state != "draining")
    healthy = tuple(w for w in workers if w.healthy)
    consuming = tuple(w for w in healthy if w.state in CONSUMING)
    spare = tuple(w for w in healthy if w.state == "standby")

    activate = tuple(w.name for w in sorted(spare, key=lambda w: w.name)[: max(desired - len(consuming), 0)])
    left = tuple(w for w in spare if w.name not in activate)
    victims = (unhealthy + choose_victims(consuming, len(consuming) - desired)
               + choose_victims(left, len(left) - standby))
    return victims, activate


def fresh_state(views: tuple[WorkerView, ...], now: float) -> PolicyState:
    """The policy state of a leader that has none (it just took over): keep the adopted size.

    Why seed the stabilization window too: without it a new leader that adopts workers in the
    gap between two tasks scales them in at once and spawns again a tick later (churn, and a
    drained worker still finishing its task beside the replacement).
    """
    current = sum(1 for v in views if v.state in CONSUMING)
    return PolicyState(history=((now, current),), current=current)
