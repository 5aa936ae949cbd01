"""The only module that calls NVML (``pynvml`` from nvidia-ml-py).

Everything GPU-related elsewhere takes an object with this module's tiny interface
(:class:`NvmlSource`: ``sample()`` and ``close()``), so it runs against ``tests/fake_nvml.py``
on machines without a GPU and against :class:`RealNvml` on machines with one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceSample:
    """One GPU at one instant, as NVML reports it."""

    index: int  # NVML index = PCI bus order (use CUDA_DEVICE_ORDER=PCI_BUS_ID to match CUDA's)
    uuid: str
    util: float = 0.0  # percent, 0-100
    mem_used: int = 0  # bytes
    mem_total: int = 0  # bytes
    processes: dict[int, int] = field(default_factory=dict)  # pid -> bytes of device memory
    xid_errors: tuple[int, ...] = ()  # XID codes reported since the previous sample
    lost: bool = False  # NVML can no longer talk to it (fell off the bus, GPU is lost)


class NvmlSource(Protocol):
    """What :mod:`app.core.gpu` needs from NVML."""

    def sample(self) -> list[DeviceSample]:
        """Every device NVML sees now, plus the XID errors since the previous call."""

    def close(self) -> None:
        """Release NVML."""


class RealNvml:
    """:class:`NvmlSource` over the real driver; construct with :func:`open_nvml`."""

    def __init__(self, pynvml: Any) -> None:
        self.nv = pynvml
        self._events: Any = None
        try:
            self._events = pynvml.nvmlEventSetCreate()
            for i in range(pynvml.nvmlDeviceGetCount()):
                try:
                    handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                    pynvml.nvmlDeviceRegisterEvents(handle, pynvml.nvmlEventTypeXidCriticalError, self._events)
                except pynvml.NVMLError as exc:  # not supported on some boards / in some containers
                    log.debug("GPU %d: XID events unavailable: %s", i, exc)
        except pynvml.NVMLError as exc:
            log.info("GPU XID error events unavailable: %s", exc)
            self._events = None

    def _xids(self) -> dict[str, list[int]]:
        """Drain pending XID events without blocking: uuid -> codes."""
        out: dict[str, list[int]] = {}
        if self._events is None:
            return out
        nv = self.nv
        for _ in range(64):
            try:
                data = nv.nvmlEventSetWait_v2(self._events, 0)
            except nv.NVMLError:  # NVMLError_Timeout: nothing pending
                break
            try:
                uuid = _text(nv.nvmlDeviceGetUUID(data.device))
            except nv.NVMLError:
                uuid = "?"
            out.setdefault(uuid, []).append(int(data.eventData))
        return out

    def sample(self) -> list[DeviceSample]:
        nv = self.nv
        xids = self._xids()
        out = []
        for i in range(nv.nvmlDeviceGetCount()):
            try:
                h = nv.nvmlDeviceGetHandleByIndex(i)
                uuid = _text(nv.nvmlDeviceGetUUID(h))
            except nv.NVMLError:
                out.append(DeviceSample(index=i, uuid=f"index-{i}", lost=True))
                continue
            try:
                mem = nv.nvmlDeviceGetMemoryInfo(h)
                try:
                    util = float(nv.nvmlDeviceGetUtilizationRates(h).gpu)
                except nv.NVMLError_NotSupported:  # MIG mode and some vGPUs
                    util = 0.0
                procs: dict[int, int] = {}
                for fn in (nv.nvmlDeviceGetComputeRunningProcesses, nv.nvmlDeviceGetGraphicsRunningProcesses):
                    try:
                        for p in fn(h):
                            procs[int(p.pid)] = procs.get(int(p.pid), 0) + int(p.usedGpuMemory or 0)
                    except nv.NVMLError_NotSupported:
                        pass
                out.append(
                    DeviceSample(i, uuid, util, int(mem.used), int(mem.total), procs, tuple(xids.get(uuid, ())))
                )
            except nv.NVMLError as exc:
                log.warning("GPU %d (%s): NVML query failed: %s", i, uuid, exc)
                out.append(DeviceSample(index=i, uuid=uuid, xid_errors=tuple(xids.get(uuid, ())), lost=True))
        return out

    def close(self) -> None:
        try:
            if self._events is not None:
                self.nv.nvmlEventSetFree(self._events)
            self.nv.nvmlShutdown()
        except self.nv.NVMLError:
            pass


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def open_nvml() -> RealNvml | None:
    """The real NVML, or None (with one log line saying GPU features are off) without a driver."""
    try:
        import pynvml  # noqa: PLC0415 - ~20 ms, only where GPU features are wanted; failing here turns them off

        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - ImportError, LibraryNotFound, DriverNotLoaded ...
        log.info("GPU features off: no NVIDIA driver/NVML available (%s)", exc)
        return None
    return RealNvml(pynvml)
