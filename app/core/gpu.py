"""GPU state of this host: which worker is on which device, how busy, how healthy (the autoscaler and the
dashboard read it).

Used for (a) placement: a new worker gets ``CUDA_VISIBLE_DEVICES`` for the device(s) with the
most free memory and no other scalejob worker; (b) the free-GPU count behind the policy's cap;
(c) victim choice (idle workers with the lowest utilisation go first); (d) health: a device that
disappears or reports an XID error marks its workers unhealthy, so the policy drains and
replaces them after their task.

A worker is on a device when the registry says so (its ``gpus`` field: the
``CUDA_VISIBLE_DEVICES`` it was started with) or when NVML lists its pid or one of its children
among the device's processes (a user app may pick devices itself). NVML reports host pids: in a
container without the host pid namespace only the ``gpus`` field maps workers to devices.

NVML is injected (:class:`app.core.nvml.NvmlSource`): tests use ``tests/fake_nvml.py``.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import psutil

from app.core.nvml import DeviceSample, NvmlSource, open_nvml

log = logging.getLogger(__name__)


class WorkerLike(Protocol):
    """The registry fields this module reads (``app.queue.workers.WorkerInfo`` has them, read-only)."""

    @property
    def name(self) -> str: ...
    @property
    def pid(self) -> int: ...
    @property
    def gpus(self) -> str: ...
    @property
    def host(self) -> str: ...


@dataclass(frozen=True)
class DeviceState:
    """One device joined with the scalejob workers on it."""

    index: int
    uuid: str
    util: float
    mem_used: int
    mem_total: int
    processes: dict[int, int]
    workers: tuple[str, ...]
    healthy: bool

    @property
    def mem_free(self) -> int:
        return max(self.mem_total - self.mem_used, 0)


@dataclass(frozen=True)
class GpuSnapshot:
    """All devices at one instant and the worker <-> device mapping; pure queries over it."""

    devices: tuple[DeviceState, ...]
    worker_devices: dict[str, tuple[int, ...]] = field(default_factory=dict)
    unhealthy_workers: frozenset[str] = frozenset()
    worker_mem: dict[str, int] = field(default_factory=dict)  # bytes, by worker name

    def free_devices(self) -> list[DeviceState]:
        """Healthy devices no scalejob worker holds, most free memory first."""
        free = [d for d in self.devices if d.healthy and not d.workers]
        return sorted(free, key=lambda d: (-d.mem_free, d.index))

    def free_gpus(self) -> int:
        """The count behind the policy's GPU cap (``Observation.free_gpus``)."""
        return len(self.free_devices())

    def place(self, count: int, per_worker: int) -> list[dict[str, str]]:
        """Environment for each of ``count`` new workers, ``per_worker`` distinct free devices each.

        Fewer entries than ``count`` when the devices run out (the policy's cap should prevent
        that). ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` makes CUDA number devices as NVML does.
        """
        if per_worker <= 0:
            return [{} for _ in range(count)]
        free = self.free_devices()
        out = []
        for i in range(count):
            chunk = free[i * per_worker : (i + 1) * per_worker]
            if len(chunk) < per_worker:
                break
            devices = ",".join(str(d.index) for d in chunk)
            out.append({"CUDA_VISIBLE_DEVICES": devices, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
        return out

    def worker_util(self, name: str) -> float | None:
        """Mean utilisation of the worker's devices; None when it holds none."""
        devs = [d for d in self.devices if d.index in self.worker_devices.get(name, ())]
        return sum(d.util for d in devs) / len(devs) if devs else None

    def worker_memory(self, name: str) -> int:
        """Device memory (bytes) the worker's processes use, over all devices."""
        return self.worker_mem.get(name, 0)

    def worker_healthy(self, name: str) -> bool:
        return name not in self.unhealthy_workers


def process_tree(pid: int) -> set[int]:
    """``pid`` and all its descendants (empty when it is gone)."""
    try:
        p = psutil.Process(pid)
        return {pid, *(c.pid for c in p.children(recursive=True))}
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return set()


def _assigned(gpus: str, devices: Iterable[DeviceSample]) -> set[int]:
    """Device indices named by a CUDA_VISIBLE_DEVICES value (indices or GPU UUIDs)."""
    by_uuid = {d.uuid: d.index for d in devices}
    out = set()
    for part in (x.strip() for x in gpus.split(",")):
        if part.isdigit():
            out.add(int(part))
        elif part in by_uuid:
            out.add(by_uuid[part])
    return out


class GpuMonitor:
    """Samples NVML once per tick and maps devices to workers.

    Remembers between samples the devices it has seen (one that disappears is lost) and the
    workers that were on a device when it failed: they stay unhealthy until they exit, even if
    the device comes back, because their CUDA context is gone.
    """

    def __init__(
        self,
        nvml: NvmlSource | None,
        tree: Callable[[int], set[int]] = process_tree,
        host: str | None = None,
    ) -> None:
        self.nvml = nvml
        self.tree = tree
        self.host = host if host is not None else socket.gethostname()
        self._seen: dict[str, int] = {}  # uuid -> index of every device ever sampled
        self._bad_workers: set[str] = set()
        self._last_workers: dict[str, set[str]] = {}  # uuid -> workers on it at the last sample
        self._gone: set[str] = set()  # uuids already reported as disappeared (log once)

    @classmethod
    def from_system(cls) -> GpuMonitor:
        """A monitor over the real driver; disabled (``enabled`` False) without one."""
        return cls(open_nvml())

    @property
    def enabled(self) -> bool:
        return self.nvml is not None

    def snapshot(self, workers: Iterable[WorkerLike]) -> GpuSnapshot | None:
        """Devices joined with ``workers``; None when GPU features are off."""
        if self.nvml is None:
            return None
        workers = list(workers)
        samples = self.nvml.sample()
        present = {s.uuid for s in samples}
        gone = [DeviceSample(index=i, uuid=u, lost=True) for u, i in self._seen.items() if u not in present]
        for s in samples:
            self._seen.setdefault(s.uuid, s.index)
        newly_gone = [g for g in gone if g.uuid not in self._gone]
        if newly_gone:
            log.warning("GPU(s) disappeared: %s", ", ".join(f"{g.index} ({g.uuid})" for g in newly_gone))
        self._gone = {g.uuid for g in gone}
        all_samples = [*samples, *gone]

        on_device: dict[int, set[str]] = {s.index: set() for s in all_samples}
        mem: dict[str, int] = {}
        for w in workers:
            devs = _assigned(w.gpus, all_samples) if w.gpus else set()
            if w.pid and (not getattr(w, "host", "") or w.host == self.host):
                pids = self.tree(w.pid)
                devs |= {s.index for s in all_samples if pids & s.processes.keys()}
                mem[w.name] = sum(m for s in all_samples for pid, m in s.processes.items() if pid in pids)
            for i in devs:
                on_device.setdefault(i, set()).add(w.name)

        live = {w.name for w in workers}
        for s in all_samples:  # a lost device lists no processes: use who was on it before
            if s.lost:
                on_device[s.index] |= self._last_workers.get(s.uuid, set()) & live
        self._last_workers = {s.uuid: set(on_device[s.index]) for s in all_samples}

        devices = []
        for s in sorted(all_samples, key=lambda s: s.index):
            failed = s.lost or bool(s.xid_errors)
            names = tuple(sorted(on_device.get(s.index, ())))
            if failed and set(names) - self._bad_workers:
                why = "lost" if s.lost else f"XID {','.join(map(str, s.xid_errors))}"
                log.warning("GPU %d (%s) %s: marking worker(s) %s unhealthy", s.index, s.uuid, why, ", ".join(names))
                self._bad_workers.update(names)
            devices.append(DeviceState(s.index, s.uuid, s.util, s.mem_used, s.mem_total, dict(s.processes), names,
                                       healthy=not s.lost))
        self._bad_workers &= live  # forget workers that have exited
        worker_devices = {n: tuple(sorted(i for i, ns in on_device.items() if n in ns)) for n in live}
        return GpuSnapshot(tuple(devices), worker_devices, frozenset(self._bad_workers), mem)

    def close(self) -> None:
        if self.nvml is not None:
            self.nvml.close()
