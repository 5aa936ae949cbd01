"""A query worker sends payloads only to the user app it supervises (issue 13, finding 8)."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading

from tests.conftest import Stack
from tests.helpers import free_port, wait_for
from tests.test_core import query_spec
from workers.query import result_body


class Squatter(threading.Thread):
    """A listener that is not the user app; it records every byte it is sent."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.received = b""
        self.sock = wait_for(lambda: self._bind(port), 10, interval=0.005, what=f"port {port} to be free for the squatter")

    @staticmethod
    def _bind(port: int) -> socket.socket | None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.close()
            return None
        s.listen(16)
        return s

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(2)
            try:
                self.received += conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\npwned")
            except OSError:
                pass
            conn.close()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept: a closed fd alone would leave the socket listening
        self.sock.close()
        self.join(5)


def test_a_process_that_takes_the_app_port_gets_no_payload(stack: Stack) -> None:
    port = free_port()
    spec = stack.deploy(query_spec(stack, port))
    stack.start_worker(spec.name)
    stack.wait_workers(spec.name, 1, "idle", timeout=60)
    first = stack.wait_done(stack.put(spec, "query", "hello"), 30)
    app_pid = json.loads(result_body(first.result))["pid"]
    os.kill(app_pid, signal.SIGKILL)  # the app dies; a local process binds its port before it is restarted
    squatter = Squatter(port)
    squatter.start()
    try:
        rec = stack.wait_done(stack.put(spec, "query", "secret payload"), 60)
        assert rec.state == "failed" and f"port {port} is held by" in (rec.error or ""), rec
        assert b"secret" not in squatter.received and squatter.received == b"", squatter.received[:200]
    finally:
        squatter.close()
    after = stack.wait_done(stack.put(spec, "query", "again"), 60)  # the app is restarted on its port and serves again
    assert after.state == "succeeded", after
