"""Front ends are stack state under ``scalejob up``: started once the API answers (the integrated
example's first task is not lost), started for a spec deployed later, visible in status and the
API, stopped on delete (issue 15 items 2 and 3)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import psutil

from tests.helpers import ROOT, wait_for
from tests.test_up import clean_env, cli, ctrl_c, start_up

INTEGRATED = ROOT / "deploy" / "examples" / "integrated.json"


def _admin(up_output: str) -> str:
    return re.search(r"admin token (\S+)", up_output).group(1)


def _first_put(log: Path) -> str | None:
    text = log.read_text() if log.exists() else ""
    m = re.search(r"put task 1: index \d+ request (\w+)", text)
    return m.group(1) if m else None


def test_the_integrated_examples_first_task_succeeds_under_up(tmp_path: Path, redis_base: str) -> None:
    up, port = start_up(tmp_path, clean_env(), str(INTEGRATED), "--broker", redis_base)
    try:
        log = tmp_path / "data" / "logs" / "frontend-integrated.log"
        rid = wait_for(lambda: _first_put(log), 60, what="the front end's first put")
        assert "put task 1 failed" not in log.read_text(), log.read_text()
        headers = {"Authorization": _admin(up.output())}
        rec = wait_for(lambda: (r := httpx.get(f"http://127.0.0.1:{port}/api/requests/{rid}", headers=headers, timeout=5).json()).get("state") in ("succeeded", "failed") and r,
                       120, interval=0.5, what="the first task to finish")
        assert rec["state"] == "succeeded", rec
        svc = httpx.get(f"http://127.0.0.1:{port}/api/services/integrated", headers=headers, timeout=5).json()
        assert svc["front_end"]["state"] in ("running", "backoff") and svc["spec"]["metadata"]["type"] == "ScalableJobService", svc
    finally:
        assert ctrl_c(up) == 0, up.output()


def test_a_front_end_starts_for_a_spec_deployed_after_up_and_stops_on_delete(tmp_path: Path, redis_base: str) -> None:
    env = clean_env()
    up, port = start_up(tmp_path, env, "--broker", redis_base)
    cli_env = {**env, "SCALEJOB_REDIS_URL": redis_base, "COLUMNS": "200"}
    try:
        spec = json.loads(INTEGRATED.read_text())
        spec["front_end"]["script"] = "python deploy/examples/frontend.py --tasks 1 --interval 0.2 --forever"
        path = tmp_path / "late.json"
        path.write_text(json.dumps(spec))
        assert cli(cli_env, "deploy", str(path)).returncode == 0
        log = tmp_path / "data" / "logs" / "frontend-integrated.log"
        wait_for(lambda: _first_put(log), 60, what="a front end for the spec deployed after up")
        status = cli(cli_env, "status", "-o", "json")
        [row] = [s for s in json.loads(status.stdout)["services"] if s["service"] == "integrated"]
        assert row["front_end"]["state"] == "running", row
        pid = row["front_end"]["pid"]
        assert cli(cli_env, "delete", "integrated", "--keep").returncode == 0
        wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 30, what="the front end to stop on delete")
    finally:
        assert ctrl_c(up) == 0, up.output()


def test_a_crash_looping_front_end_shows_in_status_with_its_exit_code(tmp_path: Path, redis_base: str) -> None:
    env = clean_env()
    up, port = start_up(tmp_path, env, "--broker", redis_base)
    cli_env = {**env, "SCALEJOB_REDIS_URL": redis_base, "COLUMNS": "200"}
    try:
        spec = json.loads(INTEGRATED.read_text())
        spec["front_end"]["script"] = "echo 'frontend: cannot bind 0.0.0.0:7860'; exit 5"
        path = tmp_path / "crashing.json"
        path.write_text(json.dumps(spec))
        assert cli(cli_env, "deploy", str(path)).returncode == 0

        def row() -> dict | None:
            out = cli(cli_env, "status", "-o", "json")
            [r] = [s for s in json.loads(out.stdout)["services"] if s["service"] == "integrated"]
            return r if r["front_end"] and r["front_end"]["last_failure"] else None

        r = wait_for(row, 60, interval=0.5, what="the front end's failure in status")
        assert "exit code 5" in r["front_end"]["last_failure"]["reason"] and "cannot bind" in r["front_end"]["last_failure"]["reason"], r
        assert "front end restarting" in r["failing"], r
    finally:
        assert ctrl_c(up) == 0, up.output()
