"""The same core suite, with RabbitMQ as the Celery broker (state stays in Redis).

Runs tests/test_core.py and tests/test_messages.py in a child pytest with
``SCALEJOB_TEST_BROKER=amqp``; skips with a reason only where no RabbitMQ answers at all.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import amqp_reachable
from tests.helpers import ROOT


@pytest.mark.timeout(600)
def test_core_suite_passes_with_rabbitmq_as_broker() -> None:
    if os.environ.get("SCALEJOB_TEST_BROKER") == "amqp":
        pytest.skip("already running under amqp")
    if not amqp_reachable():
        pytest.skip("no RabbitMQ on 127.0.0.1:5672 (install rabbitmq-server to run the amqp suite)")
    env = {**os.environ, "SCALEJOB_TEST_BROKER": "amqp"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_core.py", "tests/test_messages.py"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )
    print(proc.stdout[-4000:])
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1]
