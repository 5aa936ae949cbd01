"""Run-time commands of the ``scalejob`` CLI: up, logs, cancel, and following a request.

Attached to the typer app of ``app/cli/main.py`` by :func:`register`, like ``app/cli/ops.py``.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from app.cli.flower import FlowerAuthMissing
from app.core.connections import allow_embedded_start, state_redis
from app.core.settings import get_settings
from app.core.specs import SpecError, load_spec
from app.core.terminal import printable
from app.queue import output as sink
from app.queue import records
from app.queue.workers import list_workers
from autoscale import leader

console = Console()


err = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr and a non-zero exit: how every scalejob command fails."""
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def port_in_use(host: str, port: int) -> str | None:
    """Why ``port`` cannot be bound on ``host`` (checked before anything starts), or None when free."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a TIME_WAIT leftover is no clash
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def own_embedded() -> None:
    """Commands that run part of the stack may start the embedded Redis (and stop it when they are the last user)."""
    allow_embedded_start()
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # a SIGTERM before the command installs its own handler:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # exit through atexit: stops an embedded Redis we own


def nothing_runs(r: Any, service: str, within: float = 0.0) -> str | None:
    """Why no task of ``service`` can run (no autoscaler leader and no live worker for ``within`` s), or None.

    Why ask: a request put while nothing runs would be followed for ever; the user is told
    quickly instead, and the request (already queued) runs when the stack starts. ``within``
    covers a stack that is just starting (its autoscaler takes the lock a moment after ``up``)."""
    deadline = time.monotonic() + within
    while True:
        if leader.held(r) or any(w.state != "draining" for w in list_workers(r, service)):
            return None
        if time.monotonic() >= deadline:
            return f"nothing is running to take it (no autoscaler and no live worker of {service!r})"
        time.sleep(0.2)


def _say_why_it_waits(out: Console, r: Any, rec: records.Record, said: str) -> str:
    """Print (once per distinct cause) why a queued request does not start, e.g. a crash loop."""
    from app.api.requests import waiting_reason  # noqa: PLC0415 - pulls in FastAPI (~0.4 s): only when following

    why = waiting_reason(r, rec.service) or ""
    cause = why.split(": ", 1)[-1]
    if why and cause != said:
        out.print(f"waiting: {why}", style="yellow", highlight=False, markup=False, soft_wrap=True)
    return cause or said


def follow(
    r: Any, request_id: str, timeout: float | None, fail: Callable[[str], NoReturn], show_logs: bool = True
) -> records.Record:
    """Show a live progress bar and the request's log lines until it ends; return its record.

    ``timeout`` None: until it ends, as long as something runs to take it (checked every 2 s;
    after 5 s of nothing running, it fails with the request id to follow later)."""
    after, deadline = "0-0", time.monotonic() + (timeout if timeout is not None else float("inf"))
    checked, idle_since, said = 0.0, None, ""
    columns = (
        TextColumn("[bold]{task.fields[state]}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("request", total=100, state="queued")
        while time.monotonic() < deadline:
            for eid, msg in sink.request_events(r, request_id, after):
                after = eid
                if show_logs and msg.tags.get("type") == "log":
                    bar.console.print(printable(msg.data.decode(errors="replace")), highlight=False, markup=False)
            rec = records.get(r, request_id)
            if rec is not None:
                bar.update(task, completed=rec.progress, state=rec.state)
                if rec.done:
                    return rec
                if time.monotonic() - checked >= 2.0:
                    checked = time.monotonic()
                    said = _say_why_it_waits(bar.console, r, rec, said) if rec.state == "queued" else said
                    why = nothing_runs(r, rec.service) if rec.state == "queued" and timeout is None else None
                    idle_since = (idle_since or checked) if why else None
                    if why and idle_since is not None and checked - idle_since >= 5.0:
                        fail(f"{why}; request {request_id} stays queued: "
                             f"follow it later with `scalejob logs {request_id}`")
            time.sleep(0.1)
    fail(f"request {request_id} not finished after {timeout:.0f}s (it goes on: `scalejob logs {request_id}`)")


def up(
    specs: list[Path] | None = typer.Argument(None, help="Service JSON files to deploy"),
    port: int = typer.Option(0, help="API port (default: SCALEJOB_API_PORT or 8000)"),
    data_dir: Path | None = typer.Option(None, help="Data dir (embedded Redis, logs, storage)"),
    broker: str | None = typer.Option(None, help="Broker URL (default: embedded Redis)"),
    flower: bool = typer.Option(
        False, "--flower", help="Also run Flower (login: SCALEJOB_FLOWER_USER/PASSWORD, else one made and printed)"
    ),
    flower_port: int = typer.Option(5555, help="Flower's port (with --flower)"),
    stop_timeout: float = typer.Option(600.0, help="Seconds running tasks get to finish on Ctrl-C"),
) -> None:
    """Run the whole stack on this machine: Redis, API, autoscaler, workers; Ctrl-C stops it all.

    Example: scalejob up deploy/examples/training.json deploy/examples/inference.json
    """
    own_embedded()
    from app.cli.up import flower_login, run_up  # noqa: PLC0415 - the stack's code (httpx, autoscale): only for up

    if data_dir is not None:
        os.environ["SCALEJOB_DATA_DIR"] = str(data_dir)
    if broker:
        os.environ["SCALEJOB_BROKER_URL"] = broker
    get_settings.cache_clear()
    for p in specs or []:
        try:
            load_spec(p)
        except SpecError as exc:
            fail(str(exc))
    if flower:
        try:
            flower_login(dict(os.environ))  # half a login fails here, before anything starts
        except FlowerAuthMissing as exc:
            fail(str(exc))
    api_port = port or get_settings().api_port
    for what, p in (("API", api_port), *((("Flower", flower_port),) if flower else ())):
        if (why := port_in_use(get_settings().api_host, p)) is not None:
            fail(f"{what} port {p} on {get_settings().api_host} is in use ({why}); "
                 "stop what holds it or pick another: scalejob up --port N")
    raise typer.Exit(run_up(list(specs or []), api_port, flower_port if flower else None, stop_timeout, console))


def logs(
    request_id: str,
    follow_: bool = typer.Option(False, "--follow", "-f", help="Keep streaming until the request ends"),
) -> None:
    """Print a request's log lines (and follow them live with -f).

    Example: scalejob logs 3f2a... -f
    """
    r = state_redis()
    rec = records.get(r, request_id)
    if rec is None:
        fail(f"unknown request {request_id!r}")
    if follow_ and not rec.done:
        rec = follow(r, request_id, 365 * 24 * 3600, fail)
    else:
        for _, msg in sink.request_events(r, request_id, count=100_000):
            if msg.tags.get("type") == "log":
                console.print(printable(msg.data.decode(errors="replace")), highlight=False, markup=False)
    error = f" — {escape(printable(rec.error))}" if rec.error else ""
    console.print(f"[bold]{rec.state}[/bold] progress {rec.progress:g}%" + error)


def cancel(request_id: str) -> None:
    """Cancel a request: a waiting one never runs, a running command is terminated.

    Example: scalejob cancel 3f2a...
    """
    rec = records.cancel(state_redis(), request_id)
    if rec is None:
        fail(f"unknown request {request_id!r}")
    stopping = " (cancel requested; the worker stops it)" if rec.state == "running" else ""
    console.print(f"request {request_id}: {rec.state}" + stopping)


def register(cli: typer.Typer) -> None:
    """Add up, logs and cancel to ``cli``."""
    for command in (up, logs, cancel):
        cli.command()(command)
