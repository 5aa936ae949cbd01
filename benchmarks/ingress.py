"""Ingress benchmark: HTTP put -> task start latency and sustained put rate, next to plain Celery.

Runs, in one go and on the same broker, worker and machine:

1. latency: sequential puts at a gentle pace to an idle worker; for each, the time from just
   before the call until the worker marked the request running (``records.started_at``);
   the same for ``celery_app.send_task`` straight to the queue (the baseline);
2. rate: N concurrent clients putting as fast as they can for a few seconds (no worker
   consuming, so only ingress is measured); the same with N threads calling ``send_task``.

Usage: python benchmarks/ingress.py [--redis redis://127.0.0.1:6379/2] [--samples 200] [--clients 16] [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOKEN = "bench-token-0123456789"


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def wait_started(r, rid: str, timeout: float = 10.0, field: str = "started_at") -> float:  # noqa: ANN001
    from app.core import keys

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = r.hget(keys.request(rid), field)
        if v:
            return float(v)
        time.sleep(0.0005)
    raise TimeoutError(f"request {rid} did not reach {field}")


def settle(r, rid: str) -> None:  # noqa: ANN001
    """Let request ``rid`` finish, then pause: the next put then finds the worker really idle."""
    wait_started(r, rid, field="finished_at")
    time.sleep(0.02)


def latency_http(base: str, service: str, r, samples: int, answered: list[float] | None = None) -> list[float]:  # noqa: ANN001
    """Put -> task start for each sample; ``answered`` gets put -> HTTP reply (the ingress's own share)."""
    import httpx

    out = []
    with httpx.Client(base_url=base, headers={"Authorization": TOKEN}) as http:
        for _ in range(samples):
            t0 = time.time()
            resp = http.post(f"/api/predict/{service}", params={"taskType": "command"}, content=b"true")
            if answered is not None:
                answered.append(time.time() - t0)
            rid = resp.headers["X-Eas-Queueservice-Request-Id"]
            out.append(wait_started(r, rid) - t0)
            settle(r, rid)
    return out


def latency_celery(service: str, r, samples: int) -> list[float]:  # noqa: ANN001
    from app.core.celery_app import celery_app

    out = []
    for _ in range(samples):
        rid = uuid.uuid4().hex
        t0 = time.time()
        celery_app.send_task("scalejob.command", kwargs={"service": service, "payload": "true", "request_id": rid},
                             queue=f"scalejob.{service}", task_id=rid)
        out.append(wait_started(r, rid) - t0)
        settle(r, rid)
    return out


def _put_loop(port: int, service: str, threads: int, stop_at: float) -> int:
    """One load process: ``threads`` keep-alive connections putting until ``stop_at`` (wall clock)."""
    import http.client

    counts = [0] * threads

    def one(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.time() < stop_at:
            conn.request("POST", f"/api/predict/{service}?taskType=command", body=b"true", headers={"Authorization": TOKEN})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200, resp.status
            counts[i] += 1
        conn.close()

    ts = [threading.Thread(target=one, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts)


def rate_http(port: int, service: str, clients: int, seconds: float) -> int:
    """Load from a few processes (a single Python client process would be the bottleneck)."""
    from concurrent.futures import ProcessPoolExecutor

    procs = min(4, clients)
    stop_at = time.time() + seconds
    with ProcessPoolExecutor(procs) as pool:
        futures = [pool.submit(_put_loop, port, service, clients // procs, stop_at) for _ in range(procs)]
        return sum(f.result() for f in futures)


WRK_SCRIPT = """wrk.method = "POST"
wrk.body = "true"
wrk.headers["Authorization"] = "%s"
"""


def rate_wrk(port: int, service: str, clients: int, seconds: float) -> int:
    """Load from wrk (C, one thread): what the API sustains when the client costs almost no CPU.

    The Python load generator above burns most of a 2-core machine itself; wrk leaves the cores
    to the API and Redis, which is how a real ingress is loaded (from other machines). Every
    answer must be a 200: a non-2xx count makes the run fail.
    """
    import re
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT % TOKEN)
    url = f"http://127.0.0.1:{port}/api/predict/{service}?taskType=command"
    out = subprocess.run(["wrk", "-t", "1", "-c", str(clients), "-d", f"{seconds:g}s", "-s", f.name, url],
                         capture_output=True, text=True, check=True).stdout
    os.unlink(f.name)
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw non-2xx answers:\n{out}")
    return int(re.search(r"(\d+) requests in", out).group(1))


def rate_celery(service: str, clients: int, seconds: float) -> int:
    from app.core.celery_app import celery_app

    counts = [0] * clients
    stop = time.monotonic() + seconds

    def one(i: int) -> None:
        while time.monotonic() < stop:
            celery_app.send_task("scalejob.command", kwargs={"service": service, "payload": "true"}, queue=f"scalejob.{service}")
            counts[i] += 1

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis", default=os.environ.get("SCALEJOB_BENCH_REDIS", "redis://127.0.0.1:6379/2"))
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--port", type=int, default=18765)
    ap.add_argument("--api-workers", type=int, default=1, help="uvicorn worker processes of the API")
    ap.add_argument("--load", choices=["auto", "python", "wrk"], default="auto",
                    help="load generator for the rate test: wrk when installed (auto), else Python processes")
    args = ap.parse_args()

    prefix = f"bench{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "SCALEJOB_BROKER_URL": args.redis, "SCALEJOB_REDIS_URL": args.redis, "SCALEJOB_KEY_PREFIX": prefix,
           "SCALEJOB_DATA_DIR": f"/tmp/{prefix}", "SCALEJOB_ADMIN_TOKEN": "bench-admin", "PYTHONPATH": str(ROOT)}
    os.environ.update({k: env[k] for k in ("SCALEJOB_BROKER_URL", "SCALEJOB_REDIS_URL", "SCALEJOB_KEY_PREFIX", "SCALEJOB_DATA_DIR")})
    from app.core.connections import state_redis
    from app.core.specs import parse_spec
    from app.queue import services

    r = state_redis()
    service = f"bench-{uuid.uuid4().hex[:6]}"
    services.save(r, parse_spec({"metadata": {"name": service, "token": TOKEN, "max_waiting": 10_000_000, "rpc.worker_threads": 2}}))
    base = f"http://127.0.0.1:{args.port}"
    api = subprocess.Popen([sys.executable, "-m", "app.cli", "api", "--port", str(args.port), "--log-level", "warning",
                            "--workers", str(args.api_workers)], env=env, cwd=ROOT)
    worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", service, "--loglevel", "WARNING"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import httpx

        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)
        latency_http(base, service, r, 20)  # warm both paths and the worker
        latency_celery(service, r, 20)
        answered: list[float] = []
        http_lat = latency_http(base, service, r, args.samples, answered)
        celery_lat = latency_celery(service, r, args.samples)
        worker.terminate()
        worker.wait(30)
        use_wrk = args.load == "wrk" or (args.load == "auto" and shutil.which("wrk") is not None)
        before = r.llen(f"scalejob.{service}")
        http_n = (rate_wrk if use_wrk else rate_http)(args.port, service, args.clients, args.seconds)
        durable = r.llen(f"scalejob.{service}") - before
        celery_n = rate_celery(service, args.clients, args.seconds)
        ms = lambda v: f"{v * 1000:.2f} ms"  # noqa: E731
        print(f"put -> task start latency ({args.samples} sequential puts, idle worker)")
        print(f"  HTTP put (scalejob)      p50 {ms(pct(http_lat, 50))}  p99 {ms(pct(http_lat, 99))}  mean {ms(statistics.mean(http_lat))}")
        print(f"  send_task (plain Celery) p50 {ms(pct(celery_lat, 50))}  p99 {ms(pct(celery_lat, 99))}  mean {ms(statistics.mean(celery_lat))}")
        print(f"  ratio p50 {pct(http_lat, 50) / pct(celery_lat, 50):.2f}x")
        print(f"  HTTP put answered (durable, before the worker) p50 {ms(pct(answered, 50))}  p99 {ms(pct(answered, 99))}")
        print(f"sustained put rate ({args.clients} concurrent clients, {args.seconds:g}s, no consumer)")
        print(f"  HTTP put (scalejob)      {http_n / args.seconds:,.0f} puts/s  (load: {'wrk' if use_wrk else 'Python processes'};"
              f" {durable:,} of {http_n:,} answered puts found on the broker)")
        print(f"  send_task (plain Celery) {celery_n / args.seconds:,.0f} sends/s")
        print(f"  ratio {http_n / max(celery_n, 1):.2f}x")
    finally:
        for p in (api, worker):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        from app.core import keys

        for k in r.scan_iter(f"{prefix}:*"):
            r.delete(k)
        for k in r.scan_iter(f"{keys.celery_queue(service)}*"):
            r.delete(k)


if __name__ == "__main__":
    main()
