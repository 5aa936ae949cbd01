"""The autoscaler-crash scenario in a loop under CPU load (marked ``stress``).

Why: the failover race (a leader SIGKILLed between deciding a spawn and its worker registering)
opens wider on a loaded machine; it once made 5 workers for ``max: 3`` on a busy CI box. Two
``yes > /dev/null`` processes keep both cores busy for the whole loop. ``.ci/run`` runs
``SCALEJOB_STRESS_RUNS`` rounds (3 by default); run 20 by hand with
``SCALEJOB_STRESS_RUNS=20 python -m pytest -m stress``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.autoscaling import Autoscalers
from tests.chaos.conftest import Row
from tests.chaos.test_autoscaler_chaos import test_autoscaler_crash as crash_scenario
from tests.conftest import Stack

RUNS = int(os.environ.get("SCALEJOB_STRESS_RUNS", "3"))


@pytest.fixture(scope="module")
def cpu_load() -> Iterator[None]:
    hogs = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(2)]
    yield
    for h in hogs:
        h.kill()
        h.wait()


@pytest.mark.stress
@pytest.mark.parametrize("round_", range(RUNS))
def test_autoscaler_crash_under_load(round_: int, cpu_load: None, chaos: Stack, autoscalers: Autoscalers, row: Row) -> None:
    crash_scenario(chaos, autoscalers, row)
