"""Flower for scalejob: on only with a login, showing the real workers and tasks (HTTP API)."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from app.cli.flower import FlowerAuthMissing, basic_auth, build
from tests.conftest import Stack
from tests.helpers import ROOT, Proc, free_port, python_argv, wait_for

USER, PASSWORD = "admin", "flower-pass-123"


def start_flower(stack: Stack, port: int) -> Proc:
    env = {**stack.env, "SCALEJOB_FLOWER_USER": USER, "SCALEJOB_FLOWER_PASSWORD": PASSWORD}
    proc = Proc(python_argv("-m", "app.cli", "flower", "--port", str(port)), env, stack.tmp / "flower.log")
    stack.procs.append(proc)
    return proc


def _get(url: str, auth: tuple[str, str] | None = None) -> httpx.Response | None:
    try:
        return httpx.get(url, auth=auth, timeout=5)
    except httpx.HTTPError:
        return None


def test_flower_needs_a_login_and_shows_the_worker_and_a_finished_task(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec())
    worker_name = f"{spec.name}-w@test"
    stack.start_worker(spec.name, name=worker_name)
    stack.wait_workers(spec.name, 1, "idle")
    port = free_port()
    flower = start_flower(stack, port)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _get(f"{base}/healthcheck"), 60, what=f"Flower to answer ({flower.output()[-500:]})")

    assert _get(f"{base}/api/workers").status_code == 401
    assert _get(f"{base}/api/workers", ("admin", "wrong")).status_code == 401
    assert _get(f"{base}/workers", ("admin", "wrong")).status_code == 401

    def worker_listed() -> bool:
        resp = _get(f"{base}/api/workers?refresh=1", (USER, PASSWORD))
        return resp is not None and resp.status_code == 200 and worker_name in resp.json()

    wait_for(worker_listed, 60, interval=1.0, what="the worker in Flower's /api/workers")
    rid = stack.put(spec, "command", "echo flower-visible")
    assert stack.wait_done(rid).state == "succeeded"

    def task_listed() -> dict | None:
        resp = _get(f"{base}/api/tasks", (USER, PASSWORD))
        task = resp.json().get(rid) if resp is not None and resp.status_code == 200 else None
        return task if task and task.get("state") == "SUCCESS" else None

    task = wait_for(task_listed, 60, interval=0.5, what="the finished task in Flower's /api/tasks")
    assert task["name"] == "scalejob.command" and task["worker"] == worker_name
    assert "echo flower-visible" in task["kwargs"] and spec.name in task["kwargs"]
    page = _get(f"{base}/tasks", (USER, PASSWORD))
    assert page is not None and page.status_code == 200
    assert all(PASSWORD not in " ".join(p.cmdline()) for p in flower.tree())


def test_flower_credentials_never_appear_on_its_command_line() -> None:
    cmd = build("127.0.0.1", 5555, False, "redis://:brokerpw@127.0.0.1:6379/0", {"SCALEJOB_FLOWER_USER": USER, "SCALEJOB_FLOWER_PASSWORD": PASSWORD})
    argv = " ".join(cmd.argv)
    assert PASSWORD not in argv and "brokerpw" not in argv
    assert cmd.env["FLOWER_BASIC_AUTH"] == f"{USER}:{PASSWORD}"


def test_flower_refuses_to_start_without_credentials_unless_insecure(stack: Stack) -> None:
    env = {k: v for k, v in stack.env.items() if not k.startswith(("SCALEJOB_FLOWER_", "FLOWER_"))}
    out = subprocess.run(python_argv("-m", "app.cli", "flower"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "Flower needs credentials" in out.stderr and "--insecure" in out.stderr
    assert "FLOWER_BASIC_AUTH" not in build("127.0.0.1", 5555, True, "redis://x", env).env
    with pytest.raises(FlowerAuthMissing, match="both"):
        basic_auth({"SCALEJOB_FLOWER_USER": "only-user"})
    assert basic_auth({"FLOWER_BASIC_AUTH": "u:p"}) == "u:p"


def test_flowers_prometheus_metrics_need_the_login_too(stack: Stack) -> None:
    """Flower serves ``/metrics`` without auth by default; it names every worker and task (issue 13, finding 12)."""
    port = free_port()
    flower = start_flower(stack, port)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _get(f"{base}/healthcheck"), 60, what=f"Flower to answer ({flower.output()[-500:]})")
    assert _get(f"{base}/metrics").status_code == 401
    assert _get(f"{base}/metrics", auth=(USER, "wrong")).status_code == 401
    ok = _get(f"{base}/metrics", auth=(USER, PASSWORD))
    assert ok.status_code == 200 and "flower_" in ok.text
