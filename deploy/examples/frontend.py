"""A front end for an integrated ScalableJobService: turns its own input into queued tasks.

scalejob runs it supervised with ``SCALEJOB_ENDPOINT``, ``SCALEJOB_SERVICE`` and
``SCALEJOB_TOKEN`` set; it puts each task with the EAS queue protocol::

    POST {endpoint}/api/predict/{service}?taskType=command   Authorization: {token}

Usage: ``python frontend.py [--tasks N] [--interval S] [--command CMD] [--forever]``. Each task
is ``CMD`` (default ``python {examples}/train.py --steps 2 --out model-{i}.txt``) with ``{i}``
replaced by the task number and ``{examples}`` by this file's folder (tasks run in the
service's storage dir, so a relative path would not find train.py). It prints one line per put
(index and request id). Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

EXAMPLES = os.path.dirname(os.path.abspath(__file__))


def put(endpoint: str, service: str, token: str, payload: bytes, task_type: str = "command") -> dict:
    """One put on the service's input queue; returns ``{"index", "request_id"}``."""
    query = urllib.parse.urlencode({"taskType": task_type})
    req = urllib.request.Request(
        f"{endpoint}/api/predict/{urllib.parse.quote(service)}?{query}",
        data=payload,
        method="POST",
        headers={"Authorization": token, "Accept": "application/json", "Content-Type": "application/octet-stream"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = resp.read()
        rid = resp.headers.get("X-Eas-Queueservice-Request-Id", "")
    try:
        return json.loads(body)
    except ValueError:
        return {"index": body.decode().strip(), "request_id": rid}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--command", default="python {examples}/train.py --steps 2 --out model-{i}.txt")
    parser.add_argument("--task-type", default="command")
    parser.add_argument("--forever", action="store_true", help="keep putting a task every --interval seconds")
    args = parser.parse_args()
    try:
        endpoint, service, token = (os.environ[k] for k in ("SCALEJOB_ENDPOINT", "SCALEJOB_SERVICE", "SCALEJOB_TOKEN"))
    except KeyError as exc:
        print(f"frontend: environment variable {exc.args[0]} is not set (scalejob sets it)", file=sys.stderr)
        return 2
    i = 0
    while args.forever or i < args.tasks:
        i += 1
        payload = args.command.replace("{i}", str(i)).replace("{examples}", EXAMPLES).encode()
        try:
            out = put(endpoint.rstrip("/"), service, token, payload, args.task_type)
            print(f"put task {i}: index {out.get('index')} request {out.get('request_id')}", flush=True)
        except (urllib.error.URLError, OSError) as exc:
            print(f"put task {i} failed: {exc}", flush=True)
        time.sleep(args.interval)
    if not args.forever:
        # stay up (a front end is a long-running service); the supervisor restarts it if it exits
        while True:
            time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
