"""Only JSON is ever accepted: pickle messages are refused, malformed ones don't kill a worker."""

from __future__ import annotations

import pickle
import time

from kombu import Connection, Exchange, Producer, Queue

from tests.conftest import Stack
from tests.helpers import wait_for


class Exploit:
    """Unpickling this writes a file: proof that pickle content was deserialized."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # noqa: ANN204
        return (eval, (f"open({self.path!r}, 'w').write('pwned')",))


def _publish_raw(stack: Stack, queue: str, body: bytes, content_type: str, headers: dict) -> None:
    with Connection(stack.broker_url) as conn:
        q = Queue(queue, Exchange(queue, type="direct"), routing_key=queue)
        producer = Producer(conn)
        producer.publish(
            body, exchange=q.exchange, routing_key=queue, declare=[q], serializer=None,
            content_type=content_type, content_encoding="binary", headers=headers,
        )


def test_pickle_message_is_refused_and_the_worker_survives(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec())
    worker = stack.start_worker(spec.name)
    stack.wait_workers(spec.name, 1, "idle")
    marker = stack.tmp / "pwned.txt"
    body = pickle.dumps(((), {"service": spec.name, "payload": Exploit(str(marker))}, {}))
    headers = {"id": "evil-1", "task": "scalejob.command", "lang": "py", "argsrepr": "", "kwargsrepr": ""}
    _publish_raw(stack, f"scalejob.{spec.name}", body, "application/x-python-serialize", headers)
    wait_for(lambda: "ContentDisallowed" in worker.output() or "Refusing to deserialize" in worker.output(), what="refusal logged")
    rid = stack.put(spec, "command", "echo still-alive")
    assert stack.wait_done(rid).state == "succeeded"
    assert worker.alive() and not marker.exists()


def test_malformed_messages_do_not_crash_the_worker(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec())
    worker = stack.start_worker(spec.name)
    stack.wait_workers(spec.name, 1, "idle")
    queue = f"scalejob.{spec.name}"
    _publish_raw(stack, queue, b"{not json", "application/json", {"id": "bad-1", "task": "scalejob.command"})
    _publish_raw(stack, queue, b'[[], {"nope": 1}, {}]', "application/json", {"id": "bad-2", "task": "scalejob.command"})
    _publish_raw(stack, queue, b'[[], {}, {}]', "application/json", {"id": "bad-3", "task": "no.such.task"})
    rid = stack.put(spec, "command", "echo after-garbage")
    assert stack.wait_done(rid).state == "succeeded"
    time.sleep(0.2)
    assert worker.alive()
    assert "no.such.task" in worker.output()
