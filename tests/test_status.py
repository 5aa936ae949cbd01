"""``scalejob status``: the services table and the per-worker table (state, task, GPU, spec)."""

from __future__ import annotations

import time

from rich.console import Console

from app.cli.status import status_tables
from app.queue import decisions as history
from app.queue import services
from app.queue import workers as registry
from tests.conftest import Stack


def render(obj: object) -> str:
    console = Console(width=300, record=True)
    console.print(obj)
    return console.export_text()


def test_status_shows_queue_workers_decision_gpu_and_outdated_spec(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec(gpu=1))
    current = services.spec_hash(spec)
    registry.register(stack.r, "w-gpu@h", spec.name, "idle", gpus="0,1", spec_hash=current)
    registry.register(stack.r, "w-cpu@h", spec.name, "idle", spec_hash="0ld0ld0ld0ld0ld0")
    registry.task_started(stack.r, "w-cpu@h", "req-123")
    stack.put(spec, "command", "true")
    entry = {
        "at": time.time(), "service": spec.name, "inputs": {"waiting": 1, "running": 1, "workers": {"idle": 1, "busy": 1}, "free_gpus": 0},
        "desired": 2, "standby": 0, "reason": "load 2 (waiting 1 + running 1) => desired 2", "rule": "scale_up", "actions": [], "duration_ms": 1.0,
    }
    history.record(stack.r, spec.name, entry, 10)

    text = render(status_tables(stack.r, wide=True))  # --wide: every column in full
    row = next(line for line in text.splitlines() if spec.name in line)  # the services table comes first
    assert "1 busy, 1 idle" in row and "scale_up" in row and "load 2" in row, row
    assert " 2 " in row, "desired"
    gpu_row = next(line for line in text.splitlines() if "w-gpu@h" in line)
    cpu_row = next(line for line in text.splitlines() if "w-cpu@h" in line)
    assert "GPU 0,1" in gpu_row and "current" in gpu_row
    assert "no GPU" in cpu_row and "req-123" in cpu_row and "busy" in cpu_row and "outdated" in cpu_row


def test_status_before_any_decision_says_so(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec())
    text = render(status_tables(stack.r))
    assert spec.name in text and "no decision yet" in text
