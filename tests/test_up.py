"""``scalejob up`` as a user runs it: a subprocess, the example specs, ``scalejob submit``, Ctrl-C.

Each test starts the real stack (embedded Redis or the machine's, API, autoscaler, forked
workers, the inference example's user app), talks to it only through the CLI and HTTP, and
checks with psutil that a SIGINT leaves no process behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from pathlib import Path

import httpx
import psutil
import pytest
import redis

from tests.helpers import ROOT, Proc, free_port, python_argv, wait_for

TRAIN = ROOT / "deploy" / "examples" / "train.py"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no scalejob settings but the ones given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALEJOB_")}
    return {**env, "PYTHONPATH": str(ROOT), "SCALEJOB_KEY_PREFIX": f"sju{uuid.uuid4().hex[:8]}", **extra}


def example_specs(tmp: Path) -> list[Path]:
    """training.json as shipped; inference.json with a free port for its user app."""
    app_port = free_port()
    inference = json.loads((ROOT / "deploy/examples/inference.json").read_text())
    inference["containers"][0]["command"] = f"python deploy/examples/slow_app.py --port {app_port}"  # relative to up's cwd
    inference["containers"][0]["port"] = app_port
    out = [tmp / "training.json", tmp / "inference.json"]
    out[0].write_text((ROOT / "deploy/examples/training.json").read_text())
    out[1].write_text(json.dumps(inference))
    return out


def start_up(tmp: Path, env: dict[str, str], *args: str, log: str = "up.log") -> tuple[Proc, int]:
    port = free_port()
    proc = Proc(python_argv("-m", "app.cli", "up", *args, "--port", str(port), "--data-dir", str(tmp / "data")), env, tmp / log)
    wait_for(lambda: _healthy(port) or not proc.alive(), 60, what="the API of scalejob up to answer /healthz")
    assert proc.alive(), proc.output()
    return proc, port


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def cli(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(python_argv("-m", "app.cli", *args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def family(proc: Proc, data_dir: Path) -> list[psutil.Process]:
    """``up``'s descendants plus the embedded redis-server (it daemonizes: not a descendant)."""
    procs = proc.tree()[1:]
    try:
        procs.append(psutil.Process(int((data_dir / "redis" / "redis.pid").read_text())))
    except (OSError, ValueError, psutil.Error):
        pass
    return procs


def alive(procs: list[psutil.Process]) -> list[str]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(" ".join(p.cmdline())[:120])
        except psutil.Error:
            pass
    return out


def ctrl_c(proc: Proc, timeout: float = 60) -> int:
    proc.signal(signal.SIGINT)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"scalejob up did not exit within {timeout}s of SIGINT:\n{proc.output()}") from None


@pytest.mark.parametrize("where", ["embedded", "machine-redis"])
def test_up_runs_query_and_command_tasks_and_ctrl_c_leaves_no_process(tmp_path: Path, redis_base: str, where: str) -> None:
    specs = example_specs(tmp_path)
    if where == "embedded":
        env, extra = clean_env(), []
        cli_env = {**env, "SCALEJOB_DATA_DIR": str(tmp_path / "data")}  # submit finds up's Redis by its port file
    else:
        env, extra = clean_env(), ["--broker", redis_base]
        cli_env = {**env, "SCALEJOB_REDIS_URL": redis_base}
    up, _ = start_up(tmp_path, env, *map(str, specs), *extra)
    try:
        done = cli(cli_env, "submit", "training", f"python {TRAIN} --steps 3 --step-seconds 0.1")
        assert done.returncode == 0, done.stdout + done.stderr + up.output()
        assert "step 3/3" in done.stdout and "wrote model.txt" in done.stdout, "the command's log lines are printed"
        assert '"state": "succeeded"' in done.stdout
        query = cli(cli_env, "submit", "inference", "--type", "query", "hello")
        assert query.returncode == 0, query.stdout + query.stderr + up.output()
        assert '"status": 200' in query.stdout
        status = cli({**cli_env, "COLUMNS": "250"}, "status")
        assert status.returncode == 0, status.stderr
        assert "training" in status.stdout and "inference" in status.stdout and "no GPU" in status.stdout, status.stdout
        procs = family(up, tmp_path / "data")
        names = " ".join(" ".join(p.cmdline()) for p in procs)
        assert "app.cli api" in names and "app.cli autoscale" in names and "slow_app.py" in names
        assert "worker training" in names and "worker inference" in names
        assert (where == "embedded") == ("redis-server" in names)
    except BaseException:
        up.kill_tree()
        raise
    assert ctrl_c(up) == 0, up.output()
    assert wait_for(lambda: not alive(procs), 10, what="every process of scalejob up to be gone") is True
    out = up.output()
    assert "admin token" in out and "service     inference" in out and "stopped" in out
    assert ("SCALEJOB_DATA_DIR=" if where == "embedded" else "SCALEJOB_REDIS_URL=") in out, "up says how the CLI finds its Redis"


def test_past_stop_timeout_running_task_is_killed_and_rerun_on_next_up(tmp_path: Path) -> None:
    """A task still running after --stop-timeout is killed with its worker, then re-enqueued from its record."""
    env = clean_env()
    cli_env = {**env, "SCALEJOB_DATA_DIR": str(tmp_path / "data")}
    specs = [str(p) for p in example_specs(tmp_path)[:1]]
    up, _ = start_up(tmp_path, env, *specs, "--stop-timeout", "1")
    marker = tmp_path / "second-run"
    command = f"if [ -f {marker} ]; then echo second run; else touch {marker}; echo first run; sleep 120; fi"
    queued = cli(cli_env, "submit", "training", command, "--no-follow")
    assert queued.returncode == 0, queued.stderr
    rid = queued.stdout.split("request ")[1].split()[0]
    port = int((tmp_path / "data" / "redis" / "redis.port").read_text())
    r = redis.Redis(port=port, password=(tmp_path / "data" / "redis" / "password").read_text().strip())  # the data dir's secret
    prefix = env["SCALEJOB_KEY_PREFIX"]
    wait_for(lambda: r.hget(f"{prefix}:req:{rid}", "state") == b"running", 60, what="the task to run")
    procs = family(up, tmp_path / "data")
    assert ctrl_c(up, timeout=40) == 0, up.output()
    assert not alive(procs), alive(procs)
    assert "killed" in up.output()
    up2, _ = start_up(tmp_path, env, log="up2.log")  # no specs: the service is still deployed in the AOF
    try:
        port = int((tmp_path / "data" / "redis" / "redis.port").read_text())
        r = redis.Redis(port=port, password=(tmp_path / "data" / "redis" / "password").read_text().strip())  # the data dir's secret
        wait_for(lambda: r.hget(f"{prefix}:req:{rid}", "state") == b"succeeded", 60, what="the killed task to run again")
        logs = cli(cli_env, "logs", rid)
        assert "first run" in logs.stdout and "second run" in logs.stdout, logs.stdout
    finally:
        procs = family(up2, tmp_path / "data")
        assert ctrl_c(up2) == 0, up2.output()
        assert not alive(procs)


def test_ctrl_c_lets_a_running_task_finish_first(tmp_path: Path, redis_base: str) -> None:
    env = clean_env()
    cli_env = {**env, "SCALEJOB_REDIS_URL": redis_base}
    up, _ = start_up(tmp_path, env, str(example_specs(tmp_path)[0]), "--broker", redis_base)
    queued = cli(cli_env, "submit", "training", "sleep 3; echo finished after ctrl-c", "--no-follow")
    assert queued.returncode == 0, queued.stderr
    rid = queued.stdout.split("request ")[1].split()[0]
    r = redis.Redis.from_url(redis_base)
    key = f"{env['SCALEJOB_KEY_PREFIX']}:req:{rid}"
    wait_for(lambda: r.hget(key, "state") == b"running", 60, what="the task to run")
    procs = family(up, tmp_path / "data")
    assert ctrl_c(up) == 0, up.output()
    assert r.hget(key, "state") == b"succeeded", "the task finished before the worker stopped"
    assert "killed" not in up.output()
    assert not alive(procs), alive(procs)
    logs = cli(cli_env, "logs", rid)
    assert "finished after ctrl-c" in logs.stdout


def test_up_with_flower_prints_a_login_that_opens_it_and_ctrl_c_stops_it(tmp_path: Path, redis_base: str) -> None:
    """No Flower credentials configured: ``up --flower`` makes a password, prints it once, and Flower needs it."""
    import re

    env, flower_port = clean_env(), free_port()
    up, _ = start_up(tmp_path, env, "--broker", redis_base, "--flower", "--flower-port", str(flower_port))
    base = f"http://127.0.0.1:{flower_port}"
    try:
        found = wait_for(lambda: re.search(rf"Flower +{base} +user admin +password (\S+)", up.output()), 30, what="the Flower line")
        password = found.group(1)

        def answers() -> bool:
            try:
                return httpx.get(f"{base}/healthcheck", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(answers, 60, what=f"Flower to answer ({up.output()[-500:]})")
        assert httpx.get(f"{base}/api/workers", timeout=5).status_code == 401
        assert httpx.get(f"{base}/api/workers", auth=("admin", "wrong"), timeout=5).status_code == 401
        assert httpx.get(f"{base}/api/workers", auth=("admin", password), timeout=5).status_code == 200
        procs = family(up, tmp_path / "data")
        assert any("app.celery_app flower" in " ".join(p.cmdline()) for p in procs)  # `scalejob flower` execs Flower
        assert all(password not in " ".join(p.cmdline()) for p in procs), "the password is passed by env, never argv"
    except BaseException:
        up.kill_tree()
        raise
    assert ctrl_c(up) == 0, up.output()
    assert wait_for(lambda: not alive(procs), 10, what="every process of scalejob up to be gone") is True
    assert up.output().count(password) == 1


def test_up_refuses_half_a_flower_login_before_starting_anything(tmp_path: Path) -> None:
    out = cli(clean_env(SCALEJOB_FLOWER_USER="admin", SCALEJOB_DATA_DIR=str(tmp_path / "data")), "up", "--flower")
    assert out.returncode != 0 and "SCALEJOB_FLOWER_PASSWORD" in out.stdout + out.stderr
    assert not (tmp_path / "data" / "redis").exists(), "nothing was started"
