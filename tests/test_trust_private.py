"""Private data: the data dir, the embedded Redis's files and the logs are the scalejob user's only (issue 13, finding 2)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import httpx
import pytest

from app.core.private import exposure
from tests.helpers import Proc, free_port, python_argv, wait_for


def test_an_api_on_a_fresh_data_dir_makes_it_private_and_nobody_else_can_read_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALEJOB_")}
    env.update(SCALEJOB_DATA_DIR=str(data), PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    port = free_port()
    api = Proc(python_argv("-m", "app.cli", "api", "--port", str(port)), env, tmp_path / "api.log")
    try:
        wait_for(lambda: _up(port), 60, what="the API on the embedded Redis")
        made = [data, *data.rglob("*")]
        loose = [f"{p} {stat.filemode(p.stat().st_mode)}" for p in made if p.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO)]
        assert len(made) > 2 and loose == [], loose
        if os.geteuid() == 0 and shutil.which("runuser"):
            peek = subprocess.run(["runuser", "-u", "nobody", "--", "ls", str(data)], capture_output=True, text=True, timeout=10)
            assert peek.returncode != 0 and "denied" in peek.stderr.lower(), peek
    finally:
        api.kill_tree()
        from app.core.embedded import find_embedded, stop_embedded

        found = find_embedded(data)
        if found is not None:
            stop_embedded(found)


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json().get("redis") is True
    except (httpx.HTTPError, ValueError):
        return False


def test_an_existing_data_dir_open_to_others_is_named_in_a_warning(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    assert "accessible to other users" in (exposure(shared) or "")
    shared.chmod(0o700)
    assert exposure(shared) is None


@pytest.fixture(autouse=True)
def _umask_back() -> None:
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)
