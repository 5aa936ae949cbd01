"""A parsed service spec's ``autoscaler`` block as the policy's :class:`AutoscalerConfig`.

Why a module of its own: :mod:`autoscale.policy` must import nothing outside the standard library
and ``autoscale/``; this is the one place that reads ``app.core.specs`` models for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from autoscale.policy import AutoscalerConfig

if TYPE_CHECKING:  # pragma: no cover
    from app.core.specs import ServiceSpec


def from_spec(spec: ServiceSpec) -> AutoscalerConfig:
    """Flatten ``spec.autoscaler`` (and ``metadata.gpu``); a wait target replaces avg_waiting_length."""
    a = spec.autoscaler
    b = a.behavior
    target = a.strategies.target_wait_seconds
    # with no target the spec's validator has set avg_waiting_length (2.0 when neither is given)
    avg = cast(float, a.strategies.avg_waiting_length) if target is None else AutoscalerConfig.avg_waiting_length
    return AutoscalerConfig(
        min=a.min,
        max=a.max,
        avg_waiting_length=avg,
        target_wait_seconds=target,
        scale_down_grace=b.onZero.scaleDownGracePeriodSeconds,
        stabilization=b.scaleDown.stabilizationWindowSeconds,
        scale_up_step=b.scaleUp.maxStepPerTick,
        scale_down_step=b.scaleDown.maxStepPerTick,
        warm_standby=b.warmStandby,
        gpu_per_worker=spec.metadata.gpu,
    )
