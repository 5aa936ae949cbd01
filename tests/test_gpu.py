"""GPU placement, the free-GPU cap, victim choice and health, against the fake NVML."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest

from app.core.gpu import GpuMonitor, process_tree
from app.core.nvml import open_nvml
from autoscale.metrics.gpu import with_gpu
from autoscale.policy import AutoscalerConfig, Observation, PolicyState, WorkerView, choose_victims, decide
from tests.fake_nvml import FakeNvml, GiB


@dataclass(frozen=True)
class W:
    """A registry entry as gpu.py reads it."""

    name: str
    pid: int = 0
    gpus: str = ""
    host: str = "here"


def tree_of(mapping: dict[int, set[int]]):  # noqa: ANN201
    return lambda pid: {pid, *mapping.get(pid, set())}


def monitor(nv: FakeNvml, trees: dict[int, set[int]] | None = None) -> GpuMonitor:
    return GpuMonitor(nv, tree=tree_of(trees or {}), host="here")


def test_new_worker_goes_to_the_free_device_with_most_free_memory() -> None:
    nv = FakeNvml(4)
    nv.devices[0].mem_used = 10 * GiB
    nv.devices[1].mem_used = 70 * GiB
    nv.devices[2].mem_used = 1 * GiB  # most free memory, but a scalejob worker holds it
    nv.devices[3].mem_used = 5 * GiB
    snap = monitor(nv).snapshot([W("w-a", gpus="2")])
    assert snap.free_gpus() == 3
    assert snap.place(1, 1) == [{"CUDA_VISIBLE_DEVICES": "3", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}]


def test_placement_gives_each_new_worker_distinct_devices() -> None:
    nv = FakeNvml(5)
    for i, used in enumerate([4, 3, 2, 1, 0]):
        nv.devices[i].mem_used = used * GiB
    snap = monitor(nv).snapshot([])
    envs = snap.place(3, 2)  # 5 devices, 2 per worker: only 2 workers fit
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["4,3", "2,1"]
    assert snap.place(2, 0) == [{}, {}]  # CPU service: no GPU env


def test_worker_found_by_pid_of_its_child_process() -> None:
    nv = FakeNvml(2)
    nv.devices[1].processes = {4242: 3 * GiB}  # the user app (child of worker pid 100) on device 1
    nv.devices[1].util = 60.0
    snap = monitor(nv, {100: {4242}}).snapshot([W("w-a", pid=100)])
    assert snap.worker_devices["w-a"] == (1,)
    assert snap.worker_util("w-a") == 60.0
    assert snap.worker_memory("w-a") == 3 * GiB
    assert [d.index for d in snap.free_devices()] == [0]


def test_pids_of_workers_on_other_hosts_are_not_matched() -> None:
    nv = FakeNvml(1)
    nv.devices[0].processes = {100: GiB}
    snap = monitor(nv).snapshot([W("remote", pid=100, host="elsewhere")])
    assert snap.worker_devices["remote"] == () and snap.free_gpus() == 1


def test_gpus_field_may_name_device_uuids() -> None:
    nv = FakeNvml(2)
    snap = monitor(nv).snapshot([W("w-a", gpus=nv.devices[1].uuid)])
    assert snap.worker_devices["w-a"] == (1,)


def test_free_gpus_feed_the_policy_cap() -> None:
    nv = FakeNvml(4)
    snap = monitor(nv).snapshot([W("w-a", gpus="0"), W("w-b", gpus="1")])
    views = (WorkerView("w-a", "busy", busy_since=1.0), WorkerView("w-b", "busy", busy_since=2.0))
    cfg = AutoscalerConfig(min=0, max=10, gpu_per_worker=1)
    d, _ = decide(Observation(20, 2, views, free_gpus=snap.free_gpus()), PolicyState(current=2), cfg, 5.0)
    assert d.desired == 4 and d.rule == "gpu_cap"


def test_idle_worker_with_lowest_gpu_utilisation_is_the_first_victim() -> None:
    nv = FakeNvml(3)
    nv.devices[0].util, nv.devices[1].util, nv.devices[2].util = 70.0, 3.0, 95.0
    snap = monitor(nv).snapshot([W("a", gpus="0"), W("b", gpus="1"), W("c", gpus="2")])
    views = with_gpu((WorkerView("a", "idle"), WorkerView("b", "idle"), WorkerView("c", "busy", busy_since=1.0)), snap)
    assert [v.gpu_util for v in views] == [70.0, 3.0, 95.0]
    assert choose_victims(views, 2) == ("b", "a")


@pytest.mark.parametrize("failure", ["xid", "lost", "disappeared"])
def test_failed_device_marks_its_workers_unhealthy(failure: str, caplog: pytest.LogCaptureFixture) -> None:
    nv = FakeNvml(2)
    mon = monitor(nv, {200: {201}})
    workers = [W("on-0", gpus="0"), W("on-1", pid=200)]
    nv.devices[1].processes = {201: GiB}
    assert mon.snapshot(workers).unhealthy_workers == frozenset()
    if failure == "xid":
        nv.xid(1, 79)
    elif failure == "lost":
        nv.devices[1].lost = True
    else:
        nv.devices[1].present = False
    with caplog.at_level(logging.WARNING):
        snap = mon.snapshot(workers)
    assert not snap.worker_healthy("on-1") and snap.worker_healthy("on-0")
    assert "on-1" in caplog.text
    # the policy drains it (it finishes its task) and asks for a replacement
    views = with_gpu((WorkerView("on-0", "idle"), WorkerView("on-1", "busy", busy_since=1.0)), snap)
    d, _ = decide(Observation(0, 1, views), PolicyState(current=2), AutoscalerConfig(min=2, max=4), 2.0)
    assert d.victims == ("on-1",) and d.desired == 2
    if failure != "xid":  # a lost device is not offered to new workers
        assert [dv.index for dv in snap.free_devices()] == []


def test_unhealthy_mark_survives_recovery_and_ends_when_worker_exits() -> None:
    nv = FakeNvml(1)
    mon = monitor(nv)
    nv.xid(0, 48)
    assert not mon.snapshot([W("a", gpus="0")]).worker_healthy("a")
    assert not mon.snapshot([W("a", gpus="0")]).worker_healthy("a")  # no new XID: still unhealthy
    assert mon.snapshot([]).unhealthy_workers == frozenset()
    assert mon.snapshot([W("a", gpus="0")]).worker_healthy("a")  # a new worker with the same name


def test_no_driver_means_gpu_features_off_with_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    mon = GpuMonitor(None)
    assert not mon.enabled and mon.snapshot([W("a")]) is None
    assert with_gpu((WorkerView("a", "idle"),), None) == (WorkerView("a", "idle"),)
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        pytest.skip("an NVIDIA driver is present here")
    except pytest.skip.Exception:
        raise
    except Exception:  # noqa: BLE001
        pass
    with caplog.at_level(logging.INFO, logger="app.core.nvml"):
        assert open_nvml() is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("GPU features off")


def test_process_tree_of_this_process() -> None:
    import os

    assert os.getpid() in process_tree(os.getpid())
    assert process_tree(2**22 + 12345) == set()
