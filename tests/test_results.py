"""Query results are readable: text bodies as text (JSON shown as JSON), base64 only for binary."""

from __future__ import annotations

import json

import pytest

from app.cli.main import readable
from workers.query import QueryOutcome, body_fields, result_body


@pytest.mark.parametrize(("body", "field"), [
    (b'{"answer": 42}', "body"),
    ("héllo wörld".encode(), "body"),
    (b"", "body"),
    (b"\xff\xd8\xff\xe0 jpeg", "body_b64"),  # not UTF-8
    (b"a\x00b", "body_b64"),  # UTF-8, but binary
])
def test_a_body_is_text_when_it_is_utf8_and_base64_only_when_binary(body: bytes, field: str) -> None:
    result = QueryOutcome(200, body, 0.1, 1, "application/octet-stream").as_result()
    assert field in result and {"body", "body_b64"} - {field} - set(result) == {"body", "body_b64"} - {field}
    assert result_body(result) == body  # exact bytes either way
    assert body_fields(body) == {field: result[field]}


def test_the_cli_shows_a_json_body_as_json() -> None:
    shown = readable({"status": 200, "body": '{"answer": 42, "labels": ["cat"]}'})
    assert shown["body"] == {"answer": 42, "labels": ["cat"]}
    assert readable({"status": 200, "body": "plain text"})["body"] == "plain text"
    assert json.dumps(readable({"status": 200, "body_b64": "AAE="})) == '{"status": 200, "body_b64": "AAE="}'
