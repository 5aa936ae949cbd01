"""app.queue.depth: messages waiting on the broker, on Redis (kombu priority lists) and on RabbitMQ."""

from __future__ import annotations

import uuid

import pytest
from kombu import Connection, Exchange, Queue

from app.queue import depth
from tests.conftest import AMQP_URL, Stack, amqp_reachable


def test_waiting_counts_every_kombu_priority_list_on_redis(stack: Stack) -> None:
    from app.core.celery_app import celery_app

    spec = stack.deploy(stack.command_spec())
    if not stack.broker_url.startswith("redis"):
        pytest.skip("Redis broker only")
    for priority in (0, 0, 5, 9):
        celery_app.send_task("scalejob.command", kwargs={"service": spec.name, "payload": "true"}, queue=f"scalejob.{spec.name}", priority=priority)
    assert depth.waiting(spec.name) == 4
    assert stack.r.llen(f"scalejob.{spec.name}") < 4, "the test must cover the priority sub-lists"
    assert depth.waiting_on(stack.r, f"scalejob.{spec.name}") == 4
    assert depth.waiting("never-deployed") == 0


def test_waiting_on_rabbitmq_is_a_passive_declare() -> None:
    if not amqp_reachable():
        pytest.skip("no RabbitMQ on 127.0.0.1:5672")
    name = f"scalejob.depth-{uuid.uuid4().hex[:6]}"
    with Connection(AMQP_URL) as conn:
        queue = Queue(name, Exchange(name), routing_key=name, auto_delete=True)
        producer = conn.Producer()
        for i in range(3):
            producer.publish({"i": i}, exchange=queue.exchange, routing_key=name, declare=[queue])
        assert depth.waiting_on(AMQP_URL, name) == 3
        assert depth.waiting_on(conn, name) == 3
        assert depth.waiting_on(AMQP_URL, f"{name}-missing") == 0
        assert depth.waiting_on(AMQP_URL, name) == 3, "a 404 on one queue must not break the kept connection"
        queue(conn.default_channel).delete()
