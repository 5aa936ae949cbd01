"""A tiny plain-Celery project (nothing from scalejob) for `scalejob autoscale --celery-app`.

Its one task appends ``start <id>`` and ``end <id>`` lines to a file, so a test can prove every
task ran exactly once and to completion. Broker: ``PLAIN_CELERY_BROKER``.
"""

from __future__ import annotations

import os
import time

from celery import Celery

app = Celery("plain", broker=os.environ.get("PLAIN_CELERY_BROKER", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="plain.work")
def work(task_id: str, seconds: float, log_path: str) -> None:
    """Sleep ``seconds`` between a start and an end line."""
    with open(log_path, "a") as f:
        f.write(f"start {task_id} {os.getpid()}\n")
    time.sleep(seconds)
    with open(log_path, "a") as f:
        f.write(f"end {task_id} {os.getpid()}\n")
