"""The EAS client's own test suite (``eas_prediction/test_queue_client.py`` of 0.36), unchanged, against scalejob.

Each of its 9 tests runs in its own process with a deadline (``tests/eas_suite/run_case.py``
substitutes only endpoint, queue names and token), against a real ``scalejob api`` and, for the
two inference tests, a real worker of a query service whose app answers ``[{"echo", "ok"}]``
(the one-object, two-key list the suite checks). Every case gets a fresh service, so no case
depends on what another left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.apiserver import ApiServer, api, eas_python  # noqa: F401
from tests.conftest import Stack
from tests.helpers import ROOT, free_port

APP = ROOT / "tests" / "apps" / "eas_suite_app.py"
RUNNER = ROOT / "tests" / "eas_suite" / "run_case.py"
TOKEN = "svc-token-eas-suite-0123"
CASES = {  # name -> deadline (s): the two 2000-message cases move 2000 puts and 2000 results
    "test_queue_get_by_index": 30,
    "test_queue_get_by_request_id": 30,
    "test_queue_truncate": 30,
    "test_watch_async": 90,
    "test_watch_with_auto_commit": 30,
    "test_watch_with_inference_service_async": 120,
    "test_watch_with_inference_service_sync": 60,
    "test_watch_with_manual_commit": 30,
    "test_watch_with_two_watcher": 30,
}
WHOLE_FILE = "*"  # all 9 in one process, one service, as ``python -m unittest`` runs the file
WHOLE_FILE_ENV = "SCALEJOB_EAS_SUITE_ONE_PROCESS"


@pytest.mark.timeout(240)
@pytest.mark.parametrize("case", [*CASES, WHOLE_FILE])
def test_eas_client_suite_case(case: str, stack: Stack, api: ApiServer, eas_python: str) -> None:
    if case == WHOLE_FILE and not os.environ.get(WHOLE_FILE_ENV):
        pytest.skip(f"the whole file in one process repeats the 9 cases (~1 min): set {WHOLE_FILE_ENV}=1")
    port = free_port()
    spec = stack.deploy({
        "containers": [{"command": f"{sys.executable} {APP} --port {port}", "port": port}],
        "metadata": {"name": stack.service_name("qservice"), "token": TOKEN, "task_types": ["query"], "rpc.worker_threads": 4},
    })
    if "inference" in case or case == WHOLE_FILE:
        stack.start_worker(spec.name)
        stack.wait_workers(spec.name, 1, state="idle", timeout=60)
    args = {"host": api.host, "queue": spec.name, "token": TOKEN, "case": case}
    log = stack.tmp / "suite.log"
    deadline = CASES.get(case, 180)
    with open(log, "w") as fh:
        proc = subprocess.Popen([eas_python, str(RUNNER), json.dumps(args)], stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            rc = proc.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"{case} still running after {deadline} s:\n{log.read_text()[-3000:]}")
    assert rc == 0, f"{case} failed (rc {rc}):\n{log.read_text()[-3000:]}\n--- api ---\n{api.output()[-2000:]}"
