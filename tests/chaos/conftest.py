"""Chaos-suite plumbing: fast failure detection, outcome counting, and the summary table.

Every scenario records one :class:`Row` (requests, lost, duplicated results, interrupted, 5xx);
``pytest_terminal_summary`` prints them as one table at the end of the run. The "must be 0"
columns are asserted by each scenario itself (``Row.check``), so a broken guarantee fails the
test that broke it and still shows up in the table.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.autoscaling import autoscalers  # noqa: F401 - fixture re-export
from tests.conftest import Stack
from tests.helpers import wait_for

# Fast lease expiry so a killed worker's requests are recovered within ~2 s, not 5 s.
FAST = {"SCALEJOB_HEARTBEAT_INTERVAL": "0.5", "SCALEJOB_HEARTBEAT_TTL": "2", "SCALEJOB_POLL_INTERVAL": "0.3"}
ROWS: list[Row] = []


@dataclass
class Row:
    """One scenario's outcome counts. ``lost``, ``duplicated``, ``interrupted``, ``five_xx`` must be 0."""

    scenario: str
    requests: int = 0
    lost: int = 0
    duplicated: int = 0
    interrupted: int = 0
    five_xx: int = 0
    notes: list[str] = field(default_factory=list)

    def check(self) -> None:
        bad = {k: getattr(self, k) for k in ("lost", "duplicated", "interrupted", "five_xx") if getattr(self, k)}
        assert not bad, f"{self.scenario}: {bad} ({'; '.join(self.notes)})"


@pytest.fixture
def row(request: pytest.FixtureRequest) -> Iterator[Row]:
    """The current scenario's row; it goes into the summary table even when the test fails."""
    r = Row(request.node.name.removeprefix("test_"))
    yield r
    ROWS.append(r)


@pytest.fixture
def chaos(stack: Stack) -> Stack:
    """A Stack whose workers and autoscalers detect death fast."""
    stack.env.update(FAST)
    return stack


def settle(stack: Stack, ids: Iterable[str], timeout: float) -> None:
    """Wait for every request to end, but never fail here: what did not end is counted as lost."""
    ids = list(ids)
    try:
        wait_for(lambda: all((r := stack.record(i)) and r.done for i in ids), timeout, interval=0.2, what="every request to end")
    except AssertionError:
        pass


def count_outcomes(stack: Stack, service: str, ids: Iterable[str], row: Row) -> dict[str, int]:
    """Fill ``row`` from the request records and the output queue; returns attempts per request."""
    ids = list(ids)
    results = Counter(m.tags["requestId"] for m in stack.sink(service) if m.tags.get("type") == "result")
    attempts: dict[str, int] = {}
    row.requests += len(ids)
    for rid in ids:
        rec = stack.record(rid)
        if rec is None or rec.state != "succeeded":
            row.lost += 1
            row.notes.append(f"{rid}: {rec.state if rec else 'no record'} {getattr(rec, 'error', '')}"[:160])
        if results[rid] != 1:
            row.duplicated += results[rid] > 1
            row.lost += results[rid] == 0 and rec is not None and rec.state == "succeeded"
            row.notes.append(f"{rid}: {results[rid]} result messages")
        attempts[rid] = rec.attempts if rec else 0
    return attempts


def marks(path: Path) -> tuple[Counter[str], Counter[str]]:
    """Start and end marks written by the scenario commands (``s<tag>`` / ``e<tag>`` lines)."""
    text = path.read_text() if path.exists() else ""
    starts = Counter(re.findall(r"^s(\S+)$", text, re.M))
    ends = Counter(re.findall(r"^e(\S+)$", text, re.M))
    return starts, ends


def marked_command(tag: str, seconds: float) -> str:
    """A command that marks its start and end; a task is interrupted if it has 2 starts or no end."""
    return f"echo s{tag} >> marks.txt; sleep {seconds:.2f}; echo e{tag} >> marks.txt"


def interrupted(path: Path, tags: Iterable[str]) -> list[str]:
    starts, ends = marks(path)
    return [t for t in tags if starts[t] != 1 or ends[t] != 1]


def completed_twice(path: Path, tags: Iterable[str]) -> list[str]:
    """Tags whose command ran to its end more than once: two live runs of one request (the lease forbids it)."""
    _, ends = marks(path)
    return [t for t in tags if ends[t] > 1]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ROWS:
        return
    cols = ("scenario", "requests", "lost", "duplicated", "interrupted", "five_xx")
    width = max(len(r.scenario) for r in ROWS) + 2
    tr = terminalreporter
    tr.section("chaos summary (lost, duplicated results, interrupted, 5xx must be 0)")
    tr.write_line(f"{cols[0]:<{width}}" + "".join(f"{c:>12}" for c in cols[1:]))
    for r in ROWS:
        tr.write_line(f"{r.scenario:<{width}}" + "".join(f"{getattr(r, c):>12}" for c in cols[1:]))
        for note in r.notes[:6]:
            tr.write_line(f"    {note}")
