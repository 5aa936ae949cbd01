"""Broker contents are untrusted: garbage on a Redis broker's list never takes a worker down (issue 13, finding 10).

Apart from tests/test_messages.py because that file also runs with RabbitMQ as the broker
(tests/test_rabbitmq_suite.py), where a raw list push does not exist.
"""

from __future__ import annotations

import pytest

from tests.conftest import Stack


def test_a_message_that_is_not_even_a_json_envelope_is_dropped_and_the_worker_survives(stack: Stack) -> None:
    """Anyone who can LPUSH to the broker's list can send garbage; it must not take the worker down (issue 13, finding 10)."""
    if not stack.broker_url.startswith("redis"):
        pytest.skip("a raw list push is a Redis-broker thing")
    spec = stack.deploy(stack.command_spec())
    worker = stack.start_worker(spec.name)
    stack.wait_workers(spec.name, 1, "idle")
    for junk in (b"not json at all", b"\xff\xfe\x00", b"123", b'{"body": 1}'):
        stack.r.lpush(f"scalejob.{spec.name}", junk)
    rid = stack.put(spec, "command", "echo after-junk")
    assert stack.wait_done(rid).state == "succeeded"
    assert worker.alive(), worker.output()[-2000:]
    assert "not a kombu message envelope" in worker.output()

