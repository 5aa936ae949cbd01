"""Commands and user apps get a built environment, not the control plane's (issue 13, finding 3)."""

from __future__ import annotations

from tests.conftest import Stack

SECRET = "admin-secret-that-must-not-leak-0123"


def test_env_run_as_a_command_shows_no_admin_token_nor_redis_or_broker_url(stack: Stack) -> None:
    spec = stack.deploy({"containers": [{"env": [{"name": "MY_SETTING", "value": "kept"}]}], "metadata": {"name": stack.service_name("env")}})
    stack.start_worker(spec.name, env={"SCALEJOB_ADMIN_TOKEN": SECRET, "AWS_SECRET_ACCESS_KEY": "other-secret", "LC_ALL": "C.UTF-8"})
    rid = stack.put(spec, "command", "env")
    rec = stack.wait_done(rid, timeout=60)
    assert rec.state == "succeeded", rec
    out = "\n".join(m.data.decode() for m in stack.sink(spec.name) if m.tags.get("requestId") == rid and m.tags.get("type") == "log")
    seen = dict(line.split(" ", 1)[1].split("=", 1) for line in out.splitlines() if "=" in line)
    assert SECRET not in out and "other-secret" not in out
    assert not [k for k in seen if k.startswith("SCALEJOB_") and k not in ("SCALEJOB_SERVICE", "SCALEJOB_REQUEST_ID", "SCALEJOB_PROGRESS_FILE", "SCALEJOB_COMMAND_TOKEN")], seen
    assert stack.redis_url.split("//")[1] not in out, "no Redis URL"
    assert seen.get("MY_SETTING") == "kept" and seen.get("LC_ALL") == "C.UTF-8" and "PATH" in seen and seen.get("SCALEJOB_REQUEST_ID") == rid
