"""The Celery app every scalejob process shares: ``celery -A app.celery_app worker`` works.

The settings here are a contract (DESIGN.md): a worker takes a task only when it has a free
slot (acks_late + prefetch 1 + disable_prefetch on Redis), a task whose worker died is
redelivered, and only JSON is ever accepted, so a pickle message cannot run code.
The broker URL is resolved lazily, so importing this module never starts a Redis by itself.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from app.core.connections import endpoints, is_redis_url
from app.core.settings import get_settings


def redis_transport_options(visibility_timeout: int, service: str | None = None) -> dict[str, Any]:
    """kombu Redis transport options: the visibility timeout, and how often it is checked.

    kombu scans its ``unacked_index`` every ``unacked_restore_interval * unacked_restore_throttle``
    seconds (10 x 10 by default); a short timeout gets a matching scan period so that it means
    what it says. A worker of ``service`` keeps its unacked deliveries under keys of its own:
    ``restore_visible`` runs over every entry of the index it scans with the scanning worker's
    timeout, so only per-service keys make a per-service timeout (``metadata.visibility_timeout``)
    apply to that service's messages alone. See docs/long-running.md.
    """
    opts: dict[str, Any] = {"visibility_timeout": visibility_timeout}
    if visibility_timeout < 600:
        opts.update(unacked_restore_interval=max(1, min(10, visibility_timeout // 3)), unacked_restore_throttle=1)
    if service:
        opts.update(
            unacked_key=f"unacked:{service}",
            unacked_index_key=f"unacked_index:{service}",
            unacked_mutex_key=f"unacked_mutex:{service}",
        )
    return opts


def celery_config(broker_url: str, visibility_timeout: int) -> dict[str, Any]:
    """The Celery settings of a scalejob process for ``broker_url``."""
    amqp = broker_url.startswith(("amqp://", "amqps://", "pyamqp://"))
    return {
        "broker_url": broker_url,
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_disable_prefetch": is_redis_url(broker_url),
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "worker_send_task_events": True,
        "task_send_sent_event": False,  # Flower builds its task list from the worker events
        "task_default_queue": "scalejob.default",
        "task_create_missing_queues": True,
        "broker_transport_options": redis_transport_options(visibility_timeout) if is_redis_url(broker_url) else {},
        # RabbitMQ: quorum queues on request (SCALEJOB_AMQP_QUORUM=1); Celery then uses per-consumer QoS
        "task_create_missing_queue_type": "quorum" if amqp and get_settings().amqp_quorum else "classic",
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "broker_channel_error_retry": True,
        "worker_hijack_root_logger": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_enable_remote_control": True,
    }


def _lazy_defaults() -> dict[str, Any]:
    return celery_config(endpoints().broker_url, get_settings().visibility_timeout)


# a worker imports workers.tasks (the include) before it builds its blueprints, and that module adds
# the worker's own bootsteps: this app knows nothing of workers/
celery_app = Celery("scalejob", include=["workers.tasks"])
celery_app.add_defaults(_lazy_defaults)
app = celery_app  # `celery -A app.celery_app` looks for `app` or `celery`
