"""The policy's worker views joined with GPU state (:mod:`app.core.gpu` samples it)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from app.core.gpu import GpuSnapshot
from autoscale.policy import WorkerView


def with_gpu(views: Iterable[WorkerView], snap: GpuSnapshot | None) -> tuple[WorkerView, ...]:
    """The policy's worker views with GPU utilisation and health filled in from ``snap``."""
    if snap is None:
        return tuple(views)
    return tuple(
        replace(v, gpu_util=snap.worker_util(v.name), healthy=v.healthy and snap.worker_healthy(v.name)) for v in views
    )
