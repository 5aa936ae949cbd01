"""``python -m benchmarks.noop_worker SERVICE NAME``: a real scalejob worker whose command body is empty.

Everything around the body is the real path — Celery delivery, ``workers.tasks.execute`` (record,
lease, registry, finish, output queue, release), the heartbeat thread — only ``_command`` (the
subprocess) is replaced by an immediate success. Comparing it with a bare plain-Celery task
isolates the per-task cost of scalejob's bookkeeping from the cost of starting a process.
"""

from __future__ import annotations

import sys

from workers import tasks
from workers.instance import Instance, run_worker
from workers.steps import Hold, Runtime

RESULT = {"exit_code": 0, "duration": 0.0, "tail": []}


def noop_body(rt: Runtime, inst: Instance, request_id: str, payload: bytes, hold: Hold) -> tasks.Outcome:
    """Succeed at once; ``execute`` records it through the same ``record`` (record + output queue) as a real command."""
    return tasks.Outcome("succeeded", b'{"exit_code": 0}', RESULT)


def main(argv: list[str]) -> int:
    service, name = argv
    tasks._command = noop_body  # execute() looks the body up at call time
    return run_worker(service, name=name, loglevel="WARNING")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
