"""The Lua lives in ``.lua`` files, composed by ``-- include:`` lines, and nowhere else (app/queue/scripts.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.queue import scripts
from autoscale import leader

ROOT = Path(__file__).resolve().parent.parent
QUEUE_SCRIPTS = sorted(p.stem for p in (ROOT / "app/queue/lua").glob("*.lua"))


@pytest.mark.parametrize("name", QUEUE_SCRIPTS)
def test_each_queue_script_expands_its_includes_once(name: str) -> None:
    text = scripts.QUEUE.source(name)
    assert "-- include:" not in text
    defined = re.findall(r"^local function (\w+)", text, re.MULTILINE)
    assert len(defined) == len(set(defined)), f"{name}: a lib function is included twice: {defined}"


def test_a_script_is_read_once_and_has_no_client_of_its_own() -> None:
    script = scripts.load("task_end")
    assert scripts.load("task_end") is script and script.registered_client is None
    assert leader.lua("acquire") is leader.lua("acquire")


def test_no_python_module_holds_lua_and_the_indexed_append_is_written_once() -> None:
    py = [p for d in ("app", "workers", "autoscale") for p in (ROOT / d).rglob("*.py")]
    assert not [str(p) for p in py if "redis.call(" in p.read_text()], "Lua belongs in a .lua file"
    assert not [str(p) for p in py if re.search(r"\.eval\(", p.read_text())], "run a Script (EVALSHA), not EVAL"
    lua = [p for d in ("app", "autoscale") for p in (ROOT / d).rglob("*.lua")]
    assert [p.relative_to(ROOT).as_posix() for p in lua if "'0-' .." in p.read_text()] == ["app/queue/lua/lib/append.lua"]
