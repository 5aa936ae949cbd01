"""End to end on a real GPU: the autoscaler (real NVML) places workers on free devices and caps them.

Skipped with a reason where no NVIDIA driver answers (CI has none); run where a GPU is lent:
``python -m pytest tests/test_gpu_e2e.py`` (the embedded Redis is used when no server answers).
"""

from __future__ import annotations

import ctypes
import sys

import pytest

from tests.autoscaling import Autoscalers, autoscaled_spec, autoscalers  # noqa: F401 - fixture
from tests.conftest import Stack
from tests.helpers import CUDA_CHILD

pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py not installed")
try:
    pynvml.nvmlInit()
    DEVICES = pynvml.nvmlDeviceGetCount()
    pynvml.nvmlShutdown()
    ctypes.CDLL("libcuda.so.1")
except (pynvml.NVMLError, OSError) as exc:
    pytest.skip(f"no NVIDIA driver here: {exc}", allow_module_level=True)


def test_gpu_service_gets_one_worker_per_free_device_each_pinned_to_its_own(stack: Stack, autoscalers: Autoscalers) -> None:
    spec = autoscaled_spec(stack, min=0, max=DEVICES + 2, strategies={"avg_waiting_length": 1},
                           behavior={"onZero": {"scaleDownGracePeriodSeconds": 30}})
    spec["metadata"]["gpu"] = 1
    spec = stack.deploy(spec)
    autoscalers.wait_leader(autoscalers.start())
    # Each task opens a CUDA context with 256 MiB on the device it was given, then keeps its worker busy 2 s.
    task = f"echo devices=$CUDA_VISIBLE_DEVICES; {sys.executable} -c '{CUDA_CHILD}' < /dev/null && sleep 2"
    ids = [stack.put(spec, "command", task) for _ in range(DEVICES + 2)]
    recs = [stack.wait_done(i, 90) for i in ids]
    assert [r.state for r in recs] == ["succeeded"] * len(ids), [r.error for r in recs]

    decisions = autoscalers.decisions(spec.name)
    spawned = [x for d in decisions for x in d["actions"] if x.startswith("spawn ")]
    assert len(spawned) == DEVICES, spawned  # never more workers than free GPUs, though load asked for more
    assert any(d["rule"] == "gpu_cap" and d["inputs"]["free_gpus"] is not None for d in decisions), decisions[-5:]
    pinned = {r.worker: line.split("=", 1)[1] for r in recs for line in r.result["tail"] if line.startswith("devices=")}
    assert len(pinned) == DEVICES and sorted(pinned.values()) == sorted(set(pinned.values())), pinned  # one device each
    for w in stack.workers(spec.name):
        assert w.gpus == pinned[w.name], (w.name, w.gpus, pinned)
