"""One service's waiting clients cannot starve another service's puts (issue 13, finding 5)."""

from __future__ import annotations

import asyncio

import httpx

from tests.apiserver import ApiServer, api  # noqa: F401 - fixture
from tests.conftest import Stack

TOKEN_A, TOKEN_B = "tok-a-" + "1" * 16, "tok-b-" + "2" * 16


def test_150_long_polls_on_one_service_leave_puts_on_another_all_answered(stack: Stack, api: ApiServer) -> None:  # noqa: F811
    a = stack.deploy(stack.command_spec(token=TOKEN_A))
    b = stack.deploy(stack.command_spec(token=TOKEN_B))

    async def scenario() -> tuple[list[int], list[int]]:
        limits = httpx.Limits(max_connections=400, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=api.url, limits=limits, timeout=40) as http:
            polls = [asyncio.create_task(http.get(f"/api/predict/{b.name}/sink?_timeout_=20s&_index_=999999", headers={"Authorization": TOKEN_B}))
                     for _ in range(150)]
            await asyncio.sleep(2.0)  # the long-polls are all parked on the server now
            puts = await asyncio.gather(*[http.post(f"/api/predict/{a.name}?taskType=command", content=b"true", headers={"Authorization": TOKEN_A})
                                          for _ in range(20)])
            done = await asyncio.gather(*polls, return_exceptions=True)
        return [p.status_code for p in puts], [d.status_code if isinstance(d, httpx.Response) else -1 for d in done]

    puts, polls = asyncio.run(scenario())
    assert puts == [200] * 20, puts
    assert all(s in (200, 429) for s in polls), sorted(set(polls))  # a waiter past the per-service cap is told to come back


def test_near_the_memory_limit_a_put_answers_507_and_writes_nothing(stack: Stack, monkeypatch) -> None:  # noqa: ANN001
    from app.core import keys
    from app.queue.put import PutError, put
    from tests.conftest import reset_caches

    spec = stack.deploy(stack.command_spec())
    used = int(stack.r.info("memory")["used_memory"])
    monkeypatch.setenv("SCALEJOB_REDIS_MEMORY_LIMIT", str(used))  # already past 90% of it
    reset_caches()
    try:
        put(stack.r, spec, "command", b"true")
    except PutError as exc:
        assert exc.status == 507 and "memory limit" in exc.detail and exc.retry_after
    else:
        raise AssertionError("a put near the memory limit was accepted")
    assert stack.r.zcard(keys.requests_index(spec.name)) == 0, "nothing written"
    monkeypatch.setenv("SCALEJOB_REDIS_MEMORY_LIMIT", str(100 * used))
    reset_caches()
    assert put(stack.r, spec, "command", b"true")[1]
