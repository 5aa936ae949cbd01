"""Command output cannot drive the user's terminal through `scalejob logs` / `submit` (issue 13, finding 12)."""

from __future__ import annotations

import subprocess

from app.core.terminal import printable
from tests.conftest import Stack
from tests.helpers import ROOT, python_argv

EVIL = r"printf 'before\033]52;c;cHduZWQ=\007 \033[2J\033[31mred\033[0m \033P+q\033\\ after\n'"


def test_control_sequences_are_stripped_from_what_the_cli_prints_and_kept_in_the_log(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec())
    stack.start_worker(spec.name)
    stack.wait_workers(spec.name, 1, "idle")
    env = {**stack.env, "COLUMNS": "200"}
    submitted = subprocess.run(python_argv("-m", "app.cli", "submit", spec.name, EVIL), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert submitted.returncode == 0, submitted.stderr
    rid = submitted.stdout.split("request ")[1].split()[0]
    logs = subprocess.run(python_argv("-m", "app.cli", "logs", rid), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    for out in (submitted.stdout, logs.stdout):
        assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out, repr(out[-300:])
        assert "before" in out and "red" in out and "after" in out
    stored = [m.data for m in stack.sink(spec.name) if m.tags.get("requestId") == rid and m.tags.get("type") == "log"]
    assert any(b"\x1b]52;c;" in line for line in stored), "the stored log keeps the bytes as printed"


def test_printable_keeps_text_and_drops_every_kind_of_sequence() -> None:
    assert printable("a\x1b]0;title\x07b\x1b[1;31mc\x1b[0m\td\x9b2Je\x00f\x1bPq\x1b\\g") == "abc\tdefg"
