"""app.sdk: the same calls and return values as eas_prediction.QueueClient, plus async and submit()."""

from __future__ import annotations

import asyncio

import pytest

from app.eas import protocol as eas_proto
from app.eas.client import AsyncQueueClient, QueueClient, QueueError, submit
from tests.apiserver import ApiServer, api  # noqa: F401
from tests.conftest import Stack

TOKEN = "svc-token-sdk-012345"


def client(api: ApiServer, queue: str, fmt: str = "protobuf") -> QueueClient:
    q = QueueClient(api.host, queue)
    q.set_token(TOKEN)
    q.set_format(fmt)
    q.init()
    return q


def test_codec_round_trips_and_matches_protobuf_wire_format() -> None:
    df = eas_proto.DataFrame(index=300, tags={"requestId": "r1", "é": "ü"}, data=b"\x00\xff", message="hi")
    raw = eas_proto.encode_frame(df)
    assert raw.startswith(b"\x08\xac\x02")  # field 1 varint 300, as protobuf writes it
    assert eas_proto.decode_frame(raw) == df
    assert eas_proto.decode_list(eas_proto.encode_list([df, eas_proto.DataFrame(index=1)])) == [df, eas_proto.DataFrame(index=1)]
    with pytest.raises(eas_proto.ProtoError):
        eas_proto.decode_frame(b"\x1a\x05ab")


@pytest.mark.parametrize("fmt", ["protobuf", "json"])
def test_queue_client_calls_return_what_eas_returns(stack: Stack, api: ApiServer, fmt: str) -> None:
    spec = stack.deploy(stack.command_spec(token=TOKEN))
    q = client(api, f"{spec.name}/sink", fmt)
    index, rid = q.put("abc", tags={"k": "v"})
    assert (index, type(rid)) == ("1", str)
    [df] = q.get(request_id=rid, auto_delete=False)
    assert (df.index, df.data, df.tags["k"]) == (1, b"abc", "v")
    assert q.get(index=5, timeout="200ms") == []
    for x in range(2, 6):
        q.put(str(x))
    assert q.attributes()["stream.length"] == "5" and q.search(3)["IsPending"] is False
    assert q.delete([2, 3]) == "OK" and q.attributes()["stream.length"] == "3"
    w = q.watch(0, 2)
    first = []
    for df in w.run():
        first.append(df.index)
        q.commit(df.index)
        if len(first) == 3:
            break
    w.close()
    assert first == [1, 4, 5] and q.attributes()["stream.length"] == "0"
    q.put("x")
    assert q.truncate(100) == b"OK" and q.attributes()["stream.length"] == "0" and q.attributes()["stream.lastEntry"] == "6"
    with pytest.raises(QueueError) as bad:
        client(api, spec.name).put("refused task type", tags={"taskType": "query"})  # a command-only service
    assert bad.value.code == 400 and "taskType" in bad.value.message


def test_async_client_and_submit_follow_a_command_to_its_result(stack: Stack, api: ApiServer) -> None:
    spec = stack.deploy(stack.command_spec(token=TOKEN))
    stack.start_worker(spec.name)
    events: list[tuple[str, str]] = []
    rec = submit(api.host, spec.name, TOKEN, "echo one; echo 'progress: 50%'; echo two", on_event=lambda k, d: events.append((k, d)))
    assert rec["state"] == "succeeded" and rec["result"]["exit_code"] == 0
    assert [d.split(" ", 1)[1] for k, d in events if k == "log"] == ["one", "progress: 50%", "two"]
    assert ("progress", "50") in events and events[-1][0] == "result"

    async def go() -> tuple[list[int], dict[str, str]]:
        q = AsyncQueueClient(api.host, f"{spec.name}/sink")
        q.set_token(TOKEN)
        q.init(uid="async-1")
        await q.truncate(10_000)
        idx = [int((await q.put(f"m{i}"))[0]) for i in range(3)]
        w = q.watch(0, 5, auto_commit=True)
        seen = []
        async for df in w.run():
            seen.append(df.index)
            if len(seen) == 3:
                break
        await w.close()
        attrs = await q.attributes()
        await q.close()
        return [i - idx[0] for i in seen], attrs

    seen, attrs = asyncio.run(go())
    assert seen == [0, 1, 2] and attrs["stream.length"] == "0"
