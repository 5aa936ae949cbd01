"""The real NVML module on a real GPU; skipped with a reason where no NVIDIA driver is present."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

from tests.helpers import CUDA_CHILD, wait_for

pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py not installed")
try:
    pynvml.nvmlInit()
    pynvml.nvmlShutdown()
except pynvml.NVMLError as exc:
    pytest.skip(f"no NVIDIA driver here: pynvml.nvmlInit failed ({exc})", allow_module_level=True)

from app.core.gpu import GpuMonitor  # noqa: E402
from app.core.nvml import RealNvml, open_nvml  # noqa: E402


@pytest.fixture
def nvml() -> RealNvml:
    nv = open_nvml()
    assert nv is not None
    yield nv
    nv.close()


def test_sample_lists_every_device(nvml: RealNvml) -> None:
    samples = nvml.sample()
    assert len(samples) == pynvml.nvmlDeviceGetCount() >= 1
    for s in samples:
        assert s.uuid.startswith(("GPU-", "MIG-")) and not s.lost
        assert 0 < s.mem_used <= s.mem_total and 0 <= s.util <= 100
    assert [s.index for s in samples] == list(range(len(samples)))


def test_worker_child_with_a_cuda_context_is_mapped_to_its_device(nvml: RealNvml) -> None:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        pytest.skip(f"libcuda.so.1 not loadable: {exc}")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    child = subprocess.Popen([sys.executable, "-c", CUDA_CHILD], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"

        class Me:  # this test process plays the worker; the CUDA process is its child
            name, pid, gpus, host = "w-real", os.getpid(), "", ""

        def listed() -> set[int]:
            return {pid for s in nvml.sample() if s.index == 0 for pid in s.processes}

        try:
            wait_for(lambda: child.pid in listed(), timeout=10, what="NVML lists the child's pid")
        except AssertionError:
            pytest.skip(f"NVML pids {sorted(listed())} are not this pid namespace's (container): only the gpus field maps workers here")
        mon = GpuMonitor(nvml)
        snap = mon.snapshot([Me()])
        assert snap.worker_devices["w-real"] == (0,)
        if snap.worker_memory("w-real") == 0:  # usedGpuMemory is not reported inside some containers
            assert all(m == 0 for s in nvml.sample() for m in s.processes.values())
        else:
            assert snap.worker_memory("w-real") >= 256 << 20
        assert snap.worker_healthy("w-real")
        assert 0 not in [d.index for d in snap.free_devices()]
    finally:
        child.stdin.close()
        child.wait(timeout=10)
