"""``python -m benchmarks.bare_worker SERVICE NAME``: a real scalejob worker that runs a bare Celery task.

The worker is the real instance (init, registry heartbeat, spawn server, tenant watcher, the
RabbitMQ consumer gate, idle-first settings); the task is ``bench.count`` of
``benchmarks.plain_app``, registered on scalejob's Celery app and sent to the service's queue.
Comparing it with the same task on a plain ``celery worker`` measures what the instance
machinery alone costs a task, apart from a request's own bookkeeping (record, lease, output queue).
"""

from __future__ import annotations

import sys

from app.core.celery_app import celery_app
from benchmarks import plain_app
from workers.instance import run_worker


def main(argv: list[str]) -> int:
    service, name = argv
    celery_app.task(name="bench.count")(plain_app.count)
    return run_worker(service, name=name, loglevel="WARNING")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
