"""A command's output cannot blow up Redis or a request record (issue 13, finding 7)."""

from __future__ import annotations

from tests.conftest import Stack


def test_a_60mb_single_line_leaves_a_small_record_and_redis_nearly_as_it_was(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec())
    stack.start_worker(spec.name)
    stack.wait_workers(spec.name, 1, "idle")
    before = int(stack.r.info("memory")["used_memory"])
    rid = stack.put(spec, "command", "yes a | tr -d '\\n' | head -c 60000000; echo; echo done")
    rec = stack.wait_done(rid, timeout=120)
    assert rec.state == "succeeded", rec
    grown = int(stack.r.info("memory")["used_memory"]) - before
    record_bytes = sum(len(k) + len(v) for k, v in stack.r.hgetall(f"{stack.prefix}:req:{rid}").items())
    assert record_bytes < 2 << 20, f"record of {record_bytes} bytes"
    assert grown < 100 << 20, f"Redis grew by {grown >> 20} MiB"
    assert rec.result["truncated"] is True and rec.result["log_bytes_dropped"] >= 59_000_000
    assert rec.result["tail"][-1] == "done"
    logs = [m for m in stack.sink(spec.name) if m.tags.get("requestId") == rid and m.tags.get("type") == "log"]
    assert sum(len(m.data) for m in logs) <= (1 << 20) + 100 * len(logs)
