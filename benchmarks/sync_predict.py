"""Synchronous predict overhead: ``POST /api/predict/<svc>?_sync_=true`` vs a direct POST to the user app.

``python -m benchmarks.sync_predict [-n 300] [--redis URL]``

One query service (``deploy/examples/slow_app.py`` with no delay), one scalejob worker
(``rpc.worker_threads`` 1), one ``scalejob api``, all on this machine. Requests are sequential
and interleaved (direct, sync, direct, sync, ...) on two persistent HTTP connections, so both
paths see the same machine load in the same run; the difference is what scalejob adds: the put
(record, broker publish), the worker's pick-up, the worker's own POST to the app, the result
event and the API's wait for it.
"""

from __future__ import annotations

import argparse
import sys
import time

import httpx

from benchmarks.common import DEFAULT_REDIS, markdown_table, percentile, wait_until, world
from tests.helpers import ROOT, Proc, free_port, python_argv

TOKEN = "bench-sync-predict-token"
APP = ROOT / "deploy" / "examples" / "slow_app.py"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=300, help="samples per path")
    ap.add_argument("--redis", default=DEFAULT_REDIS)
    args = ap.parse_args()
    from app.core.specs import parse_spec
    from app.queue import services

    with world(args.redis, "sync") as w:
        app_port, api_port = free_port(), free_port()
        spec = parse_spec({
            "containers": [{"command": f"{sys.executable} {APP} --port {app_port}", "port": app_port, "env": {"SLOW_APP_DELAY": "0"}}],
            "metadata": {"name": w.name("sync"), "token": TOKEN, "task_types": ["query"]},
        })
        services.save(w.r, spec)
        api = Proc(python_argv("-m", "app.cli", "api", "--port", str(api_port), "--log-level", "warning"),
                   {**w.env, "SCALEJOB_ADMIN_TOKEN": "bench-admin"}, w.tmp / "api.log", cwd=ROOT)
        w.procs.append(api)
        w.scalejob_worker(spec.name, f"{spec.name}@bench")
        w.wait_scalejob_idle(spec.name, 1)
        direct = httpx.Client(base_url=f"http://127.0.0.1:{app_port}", timeout=30)
        sync = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", headers={"Authorization": TOKEN}, timeout=30)
        wait_until(lambda: _ok(direct, "/") and _ok(sync, "/healthz"), 30, "app and API answering", 0.05)
        lat: dict[str, list[float]] = {"direct HTTP to the app": [], "sync predict via scalejob": []}
        for i in range(args.n + 20):  # the first 20 of each warm connections, caches and the worker
            for label, call in (("direct HTTP to the app", lambda: direct.post("/", content=b"[{}]")),
                                ("sync predict via scalejob", lambda: sync.post(f"/api/predict/{spec.name}", params={"_sync_": "true"}, content=b"[{}]"))):
                t0 = time.perf_counter()
                resp = call()
                took = time.perf_counter() - t0
                assert resp.status_code == 200 and b'"length": 4' in resp.content, (label, resp.status_code, resp.text[:200])
                if i >= 20:
                    lat[label].append(took)
        ms = lambda v: f"{v * 1000:.2f}"  # noqa: E731
        rows = [[k, len(v), ms(percentile(v, 50)), ms(percentile(v, 95)), ms(sum(v) / len(v))] for k, v in lat.items()]
        d, s = lat["direct HTTP to the app"], lat["sync predict via scalejob"]
        rows.append(["overhead (sync - direct)", "", ms(percentile(s, 50) - percentile(d, 50)), ms(percentile(s, 95) - percentile(d, 95)),
                     ms(sum(s) / len(s) - sum(d) / len(d))])
        print(markdown_table(["path", "samples", "p50 ms", "p95 ms", "mean ms"], rows))


def _ok(client: httpx.Client, path: str) -> bool:
    try:
        return client.get(path).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
