"""Bad input and broken dependencies answer 4xx/503, never 500, and leave nothing half-done (issue 13, finding 11)."""

from __future__ import annotations

import pytest

from app.core import keys
from tests.apiserver import ADMIN_TOKEN, ApiServer, api  # noqa: F401 - fixture
from tests.conftest import Stack, _point_celery_at, reset_caches
from tests.helpers import free_port


def test_a_put_while_the_broker_is_down_answers_503_and_leaves_no_record(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.queue.put import PutError, put

    spec = stack.deploy(stack.command_spec())
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    monkeypatch.setenv("SCALEJOB_BROKER_URL", dead)
    reset_caches()
    _point_celery_at(dead)
    with pytest.raises(PutError) as exc:
        put(stack.r, spec, "command", b"true")
    assert exc.value.status == 503 and "broker" in exc.value.detail
    assert stack.r.zcard(keys.requests_index(spec.name)) == 0, "no record left behind"
    assert not list(stack.r.scan_iter(f"{stack.prefix}:req:*")) and stack.r.xlen(keys.input_stream(spec.name)) == 0


def test_huge_numbers_nul_paths_and_out_of_range_offsets_are_4xx(stack: Stack, api: ApiServer) -> None:  # noqa: F811
    spec = stack.deploy(stack.command_spec())
    with api.client() as http:
        big = http.put(f"/api/services/{spec.name}", content=b'{"metadata": {"name": "x", "max_payload_bytes": ' + b"9" * 5000 + b"}}",
                       headers={"Content-Type": "application/json"})
        assert big.status_code in (400, 422), big.text
        nul = http.get("/ui/static/dashboard.js%00.js")
        assert nul.status_code == 404, nul.text
        for route in ("workers", "requests"):
            far = http.get(f"/api/services/{spec.name}/{route}?offset=999999999999999999999")
            assert far.status_code in (400, 422), (route, far.status_code, far.text)
    assert "\x00" not in api.output() and "Traceback" not in api.output()


def test_a_put_without_a_valid_token_is_refused_before_its_body_is_read(stack: Stack, api: ApiServer) -> None:  # noqa: F811
    """Only the headers of a 10 MiB upload are sent: the answer must come without waiting for the body (finding 6)."""
    import socket

    spec = stack.deploy(stack.command_spec(token="tok-" + "y" * 16, max_payload_bytes=64 << 20))
    for token in ("", "Authorization: wrong-token\r\n"):
        with socket.create_connection(("127.0.0.1", api.port), timeout=5) as s:
            s.sendall(f"POST /api/predict/{spec.name}?taskType=command HTTP/1.1\r\nHost: x\r\n{token}"
                      f"Content-Length: {10 << 20}\r\nContent-Type: application/octet-stream\r\n\r\n".encode())
            head = s.recv(4096)  # times out (an exception) if the server waits for the 10 MiB first
        assert head.startswith(b"HTTP/1.1 401"), head[:200]


def test_without_a_valid_token_a_missing_service_or_request_looks_like_an_existing_one(stack: Stack, api: ApiServer) -> None:  # noqa: F811
    """No existence oracle: 401 whether the service or request exists or not; 404 only for a caller with a valid token."""
    spec = stack.deploy(stack.command_spec(token="tok-" + "z" * 16))
    with api.client("tok-" + "z" * 16) as http:
        rid = http.post(f"/api/predict/{spec.name}?taskType=command", content=b"true").headers["X-Eas-Queueservice-Request-Id"]
    for token in (None, "not-a-token"):
        with api.client(token) as http:
            pairs = [(f"/api/predict/{spec.name}", "/api/predict/no-such-svc"), (f"/api/requests/{rid}", "/api/requests/no-such-id")]
            for known, missing in pairs:
                assert http.get(known).status_code == http.get(missing).status_code == 401, (token, known, missing)
    with api.client("tok-" + "z" * 16) as http:
        assert http.get("/api/requests/no-such-id").status_code == 404 and http.get("/api/predict/no-such-svc").status_code == 404
