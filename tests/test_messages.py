"""Only JSON is ever accepted: pickle messages are refused, malformed ones don't kill a worker."""

from __future__ import annotations

import pickle
import shutil
import tempfile
import time
import uuid
from pathlib import Path

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


def test_a_request_id_that_would_reach_outside_its_directory_is_refused(stack: Stack, tmp_path: Path) -> None:
    victim_dir = Path(tempfile.gettempdir()) / f"victim-{uuid.uuid4().hex[:8]}"
    victim_dir.mkdir()
    victim = victim_dir / "victim.progress"
    victim.write_text("precious")
    try:
        spec = stack.deploy(stack.command_spec())
        worker = stack.start_worker(spec.name)
        stack.wait_workers(spec.name, 1, "idle")
        from app.core.celery_app import celery_app

        evil = f"../{victim_dir.name}/victim"
        celery_app.send_task("scalejob.command", kwargs={"service": spec.name, "payload": "true", "request_id": evil}, queue=f"scalejob.{spec.name}")
        wait_for(lambda: "invalid request id" in worker.output(), 20, what="the refusal to be logged")
        assert victim.read_text() == "precious"
        assert not stack.r.exists(f"{stack.prefix}:req:{evil}"), "no key was made from it either"
        rid = stack.put(spec, "command", "echo fine")
        assert stack.wait_done(rid).state == "succeeded" and worker.alive()
    finally:
        shutil.rmtree(victim_dir, ignore_errors=True)


def test_a_message_for_another_service_on_this_services_queue_is_refused(stack: Stack) -> None:
    """Service B's queue carrying ``service: A``: B's worker must not run it as A (A's env, A's storage)."""
    a = stack.deploy(stack.command_spec())
    b = stack.deploy(stack.command_spec())
    worker = stack.start_worker(b.name)
    stack.wait_workers(b.name, 1, "idle")
    from app.core.celery_app import celery_app

    celery_app.send_task("scalejob.command", kwargs={"service": a.name, "payload": "touch planted", "request_id": uuid.uuid4().hex},
                         queue=f"scalejob.{b.name}")
    wait_for(lambda: "refused" in worker.output() and a.name in worker.output(), 20, what="the refusal to be logged")
    assert not (stack.tmp / "data" / "storage" / a.name / "planted").exists()
    rid = stack.put(b, "command", "echo fine")
    assert stack.wait_done(rid).state == "succeeded" and worker.alive()
