"""The ``scalejob`` command line (typer + rich): the user's daily tool.

Errors are one line on stderr and a non-zero exit; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from app import records, services
from app.specs import SpecError, load_spec

cli = typer.Typer(add_completion=False, no_args_is_help=True, help="scalejob: elastic Celery workers that never kill a running task.")
console = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def _redis():  # noqa: ANN202
    from app.connections import state_redis

    return state_redis()


@cli.command()
def worker(
    service: str = typer.Argument(..., help="Service whose queue this instance consumes"),
    spec: Optional[Path] = typer.Option(None, help="Deploy this spec file first"),
    name: Optional[str] = typer.Option(None, help="Worker name (default: SERVICE-<random>@host)"),
    standby: bool = typer.Option(False, help="Start initialised but not consuming (warm standby)"),
    loglevel: str = typer.Option("INFO"),
) -> None:
    """Run one instance of SERVICE: init commands, user app, then tasks in a loop.

    Example: scalejob worker training --spec deploy/examples/training.json
    """
    from workers.instance import run_worker

    if spec is not None:
        deploy(spec)
    raise typer.Exit(run_worker(service, name=name, loglevel=loglevel, standby=standby))


@cli.command()
def deploy(spec: Path = typer.Argument(..., help="Service JSON file")) -> None:
    """Register or update a service from its JSON spec.

    Example: scalejob deploy deploy/examples/inference.json
    """
    try:
        parsed = load_spec(spec)
    except SpecError as exc:
        fail(str(exc))
    version = services.save(_redis(), parsed)
    console.print(f"deployed [bold]{parsed.name}[/bold] (version {version})")


@cli.command()
def submit(
    service: str,
    data: str = typer.Argument(..., help="Payload, or @file to read it from a file"),
    task_type: str = typer.Option("command", "--type", help="command or query"),
    follow: bool = typer.Option(True, help="Wait for the result and stream logs"),
    timeout: float = typer.Option(3600.0, help="Seconds to wait when following"),
) -> None:
    """Put one task on SERVICE's queue (and follow it to its result).

    Example: scalejob submit training "python train.py --steps 3"
    """
    from app.inqueue import PutError, put

    payload = Path(data[1:]).read_bytes() if data.startswith("@") else data.encode()
    r = _redis()
    try:
        spec = services.get(r, service)
        index, rid = put(r, spec, task_type, payload)
    except services.UnknownService:
        fail(f"unknown service {service!r}; deploy it first (scalejob deploy SPEC.json)")
    except PutError as exc:
        fail(exc.detail)
    console.print(f"queued request [bold]{rid}[/bold] (index {index})")
    if not follow:
        return
    rec = follow_request(r, rid, timeout)
    console.print_json(json.dumps({"state": rec.state, "result": rec.result, "error": rec.error}))
    raise typer.Exit(0 if rec.state == "succeeded" else 1)


def follow_request(r, request_id: str, timeout: float) -> records.Record:  # noqa: ANN001
    """Print a request's log lines as they come; return its final record."""
    from app import sink

    after, deadline = "0-0", time.monotonic() + timeout
    while time.monotonic() < deadline:
        for eid, msg in sink.request_events(r, request_id, after):
            after = eid
            if msg.tags.get("type") == "log":
                console.print(msg.data.decode(errors="replace"), highlight=False, markup=False)
        rec = records.get(r, request_id)
        if rec is not None and rec.done:
            return rec
        time.sleep(0.1)
    fail(f"request {request_id} not finished after {timeout:.0f}s")
    raise AssertionError


@cli.command()
def demo() -> None:
    """Run scalejob end to end on this machine: embedded Redis, one worker, two tasks."""
    from app.demo import run_demo

    raise typer.Exit(run_demo(console))


def main() -> None:
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
    try:
        cli()
    except Exception as exc:  # noqa: BLE001 - one clear line unless --debug
        if debug:
            raise
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
