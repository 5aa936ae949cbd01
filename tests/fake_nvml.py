"""A fake NVML for machines without a GPU: devices whose state the test sets directly.

Implements :class:`app.core.nvml.NvmlSource`; the real one is ``RealNvml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.core.nvml import DeviceSample

GiB = 1024**3


@dataclass
class FakeDevice:
    index: int
    util: float = 0.0
    mem_used: int = 0
    mem_total: int = 80 * GiB
    processes: dict[int, int] = field(default_factory=dict)
    lost: bool = False
    present: bool = True

    @property
    def uuid(self) -> str:
        return f"GPU-fake-{self.index:04d}"


class FakeNvml:
    """``FakeNvml(4)``: four idle 80 GiB devices; mutate ``devices[i]`` or call ``xid(i, 79)``."""

    def __init__(self, count: int = 0) -> None:
        self.devices = [FakeDevice(i) for i in range(count)]
        self._xids: dict[int, list[int]] = {}
        self.closed = False

    def xid(self, index: int, code: int) -> None:
        self._xids.setdefault(index, []).append(code)

    def sample(self) -> list[DeviceSample]:
        out = []
        for d in self.devices:
            if not d.present:
                continue
            xids = tuple(self._xids.pop(d.index, ()))
            out.append(DeviceSample(d.index, d.uuid, d.util, d.mem_used, d.mem_total, dict(d.processes), xids, d.lost))
        return out

    def close(self) -> None:
        self.closed = True
