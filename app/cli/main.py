"""The ``scalejob`` command line (typer + rich): the user's daily tool.

Errors are one line on stderr and a non-zero exit; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import redis
import typer
from rich.console import Console

from app.api import auth
from app.cli import ops, run
from app.cli.help import quiet_metavars
from app.cli.run import err, fail, follow, nothing_runs, own_embedded
from app.core.connections import state_redis
from app.core.private import restrict
from app.core.settings import get_settings
from app.core.specs import SpecError, load_spec
from app.queue import records, services

quiet_metavars()
cli = typer.Typer(
    add_completion=False, no_args_is_help=True, help="scalejob: elastic Celery workers that never kill a running task."
)
console = Console()


@cli.command()
def worker(
    service: str = typer.Argument(..., help="Service whose queue this instance consumes"),
    spec: Path | None = typer.Option(None, help="Deploy this spec file first"),
    name: str | None = typer.Option(None, help="Worker name (default: SERVICE-<random>@host)"),
    standby: bool = typer.Option(False, help="Start initialised but not consuming (warm standby)"),
    loglevel: str = typer.Option("INFO"),
) -> None:
    """Run one instance of SERVICE: init commands, user app, then tasks in a loop.

    Example: scalejob worker training --spec deploy/examples/training.json
    """
    own_embedded()
    from workers.instance import run_worker  # noqa: PLC0415 - Celery's worker (~0.3 s): only for this command

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
    r = state_redis()
    version = services.save(r, parsed)
    console.print(f"deployed [bold]{parsed.name}[/bold] (version {version})")
    if parsed.metadata.token:
        console.print("token: metadata.token of the spec", soft_wrap=True)
    elif not auth.has_issued(r, parsed.name):  # the first deploy makes one, like PUT /api/services/<name>
        token = auth.issue(r, parsed.name)
        console.print(f"token [bold]{token}[/bold] (shown once; send it as the Authorization header)", soft_wrap=True)
    else:
        console.print(f"token: issued before and not shown again; a new one: scalejob token create {parsed.name}",
                      soft_wrap=True)


@cli.command()
def submit(
    service: str,
    data: str = typer.Argument(..., help="Payload, or @file to read it from a file"),
    task_type: str = typer.Option("command", "--type", help="command or query"),
    follow: bool = typer.Option(True, help="Wait for the result and stream logs"),
    timeout: float | None = typer.Option(
        None, help="Seconds to wait when following (default: until done, while something runs to take it)"
    ),
) -> None:
    """Put one task on SERVICE's queue (and follow it to its result).

    Example: scalejob submit training "python train.py --steps 3"
    """
    from app.queue.put import PutError, put  # noqa: PLC0415 - kombu and billiard (~50 ms): only for submit

    payload = Path(data[1:]).read_bytes() if data.startswith("@") else data.encode()
    r = state_redis()
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
    if (why := nothing_runs(r, service, within=1.5)) is not None:
        fail(f"{why}; request {rid} stays queued: start the stack (scalejob up) "
             f"and follow it with `scalejob logs {rid}`")
    rec = follow_request(r, rid, timeout)
    console.print_json(json.dumps({"state": rec.state, "result": readable(rec.result), "error": rec.error}))
    raise typer.Exit(0 if rec.state == "succeeded" else 1)


def readable(result: dict | None) -> dict | None:
    """A query result as a user reads it: a JSON ``body`` parsed (printed pretty), other text as is."""
    if not result or not isinstance(result.get("body"), str):
        return result
    try:
        return {**result, "body": json.loads(result["body"])}
    except ValueError:
        return result


def follow_request(r: redis.Redis, request_id: str, timeout: float | None) -> records.Record:
    """Stream a request's log lines with a live progress bar; return its final record."""
    return follow(r, request_id, timeout, fail)


@cli.command()
def demo() -> None:
    """Run scalejob end to end on this machine: embedded Redis, one worker, two tasks."""
    own_embedded()
    from app.cli.demo import run_demo  # noqa: PLC0415 - a worker's code (httpx, Celery): only for the demo

    raise typer.Exit(run_demo(console))


@cli.command()
def api(
    host: str | None = typer.Option(None, help="Bind address (default: SCALEJOB_API_HOST, 127.0.0.1)"),
    port: int | None = typer.Option(None, help="Port (default: SCALEJOB_API_PORT, 8000)"),
    log_level: str = typer.Option("info", help="uvicorn log level"),
    workers: int = typer.Option(1, help="uvicorn worker processes (one per core for the highest put rate)"),
) -> None:
    """Run the HTTP ingress (EAS queue-service compatible) with uvicorn.

    Example: SCALEJOB_ADMIN_TOKEN=secret scalejob api --port 8000
    """
    own_embedded()
    import uvicorn  # noqa: PLC0415 - the server (~30 ms, and the app it loads): only for this command

    s = get_settings()
    uvicorn.run("app.api:app", host=host or s.api_host, port=port or s.api_port, log_level=log_level,
                ws="websockets-sansio", workers=workers)


ops.register(cli)  # spec-schema, services, delete, token, redis-acl, flower
run.register(cli)  # up, logs, cancel


@cli.command()
def autoscale(
    celery_app: str | None = typer.Option(
        None, "--celery-app", help="Scale a plain Celery project instead: module:app"
    ),
    queue: str | None = typer.Option(None, help="With --celery-app: the queue to scale on"),
    worker_cmd: str | None = typer.Option(
        None, "--worker-cmd", help="With --celery-app: the worker command (scalejob adds -n NAME)"
    ),
    min_workers: int = typer.Option(0, "--min", help="With --celery-app: fewest workers"),
    max_workers: int = typer.Option(8, "--max", help="With --celery-app: most workers"),
    avg_waiting_length: float = typer.Option(2.0, "--avg-waiting-length", help="With --celery-app: tasks per worker"),
    grace: float = typer.Option(60.0, help="With --celery-app: seconds of zero load before scaling to zero"),
    stabilization: float = typer.Option(1.0, help="With --celery-app: scale-down stabilization window (s)"),
    metrics_port: int | None = typer.Option(None, "--metrics-port", help="Serve Prometheus metrics on this port"),
    fork: bool = typer.Option(
        True, help="Fork new scalejob workers from a pre-imported template (--no-fork: fresh processes)"
    ),
    backend: str | None = typer.Option(None, help="local or kubernetes (default: SCALEJOB_AUTOSCALER_BACKEND, local)"),
    k8s_namespace: str | None = typer.Option(
        None, "--k8s-namespace", help="Namespace of the worker Deployments (default: SCALEJOB_K8S_NAMESPACE, default)"
    ),
) -> None:
    """Run the autoscaler: workers follow the queue depth, scale-in never kills a running task.

    Examples: scalejob autoscale
              scalejob autoscale --backend kubernetes --k8s-namespace scalejob-workers
              scalejob autoscale --celery-app proj.celery:app --queue images --worker-cmd "celery -A proj.celery worker -Q images -c 1" --min 0 --max 8
    """  # noqa: E501 - the example is one command line, copied as is
    own_embedded()
    # the autoscaler (Celery, backends, kubernetes when chosen): only for this command
    from autoscale.main import celery_autoscaler, scalejob_autoscaler  # noqa: PLC0415
    from autoscale.policy import AutoscalerConfig  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    if backend not in (None, "local", "kubernetes"):
        fail(f"--backend: expected local or kubernetes, got {backend!r}")
    chosen = (("autoscaler_backend", backend), ("k8s_namespace", k8s_namespace))
    settings = settings.model_copy(update={k: v for k, v in chosen if v})
    if celery_app:
        if settings.autoscaler_backend != "local":
            fail("--celery-app runs local workers only (--backend local)")
        if not queue or not worker_cmd:
            fail("--celery-app needs --queue and --worker-cmd")
        if max_workers < max(min_workers, 1):
            fail(f"--max ({max_workers}) must be >= 1 and >= --min ({min_workers})")
        cfg = AutoscalerConfig(min=min_workers, max=max_workers, avg_waiting_length=avg_waiting_length,
                               scale_down_grace=grace, stabilization=stabilization)
        scaler = celery_autoscaler(settings, celery_app, queue, worker_cmd, cfg)  # type: ignore[arg-type]
    else:
        scaler = scalejob_autoscaler(settings, fork=fork)
    scaler.serve(metrics_port=metrics_port)


@cli.command()
def status(
    watch: bool = typer.Option(False, "--watch", "-w", help="Redraw every second until Ctrl-C"),
    wide: bool = typer.Option(False, "--wide", help="Show long reasons in full (default: fit 80 columns)"),
    output: str = typer.Option("table", "--output", "-o", help="table or json"),
) -> None:
    """Show each service (waiting and running tasks, workers by state, desired count, last decision
    and its reason) and each worker (state, task, GPU, whether it runs the current spec).

    Needs the same SCALEJOB_DATA_DIR or SCALEJOB_REDIS_URL as `scalejob up` / the autoscaler.

    Examples: scalejob status
              scalejob status --watch
    """
    # the status readers pull in kombu and prometheus_client (~0.1 s): only for this command
    from app.cli.status import status_tables  # noqa: PLC0415
    from app.cli.status import watch as watch_status  # noqa: PLC0415
    from app.queue.status import status_data  # noqa: PLC0415

    if output not in ("table", "json"):
        fail(f"--output: expected table or json, got {output!r}")
    if output == "json":
        typer.echo(json.dumps(status_data(state_redis()), default=str))
    elif watch:
        watch_status(state_redis(), console, wide=wide)
    else:
        console.print(status_tables(state_redis(), wide=wide, width=console.width))


@cli.command()
def simulate(
    trace: Path = typer.Argument(..., help="CSV of 'arrival,duration' rows in seconds"),
    spec: Path | None = typer.Option(None, help="Take the autoscaler config from this service JSON"),
    min: int | None = typer.Option(None, "--min", help="autoscaler.min (default: spec or 0)"),  # noqa: A002
    max: int | None = typer.Option(None, "--max", help="autoscaler.max (default: spec or 10)"),  # noqa: A002
    avg_waiting_length: float | None = typer.Option(None, help="strategies.avg_waiting_length"),
    target_wait: float | None = typer.Option(
        None, "--target-wait", help="strategies.target_wait_seconds (instead of avg_waiting_length)"
    ),
    grace: float | None = typer.Option(None, help="behavior.onZero.scaleDownGracePeriodSeconds"),
    window: float | None = typer.Option(None, help="behavior.scaleDown.stabilizationWindowSeconds"),
    warm_standby: int | None = typer.Option(None, help="behavior.warmStandby"),
    start_time: float = typer.Option(0.6, help="Seconds from spawning a worker to its first task"),
    poll: float = typer.Option(0.5, help="scalejob's tick (s); an enqueue also wakes it"),
    compare: bool = typer.Option(
        True, help="Also run KEDA (its defaults: listLength 5) and an HPA with the same target"
    ),
    redelivery: float = typer.Option(
        3600.0,
        help="Seconds until a task cut by Kubernetes is back in the queue (Celery on Redis: visibility_timeout)",
    ),
    png: Path | None = typer.Option(None, help="Write a timeline PNG (load, workers, decisions)"),
    as_json: bool = typer.Option(
        False, "--json",
        help="Print the rows as one JSON list (policy, worker_seconds, wait_p50, wait_p95, wait_max, spawns, cut)",
    ),
) -> None:
    """Replay an arrival trace through the autoscaling policy: cost, waits, scale events.

    Example: scalejob simulate benchmarks/traces/bursty.csv --spec svc.json --json
    """
    from autoscale.simulate import run_cli  # noqa: PLC0415 - the simulator (matplotlib for --png): only for this

    overrides = {"min": min, "max": max, "avg_waiting_length": avg_waiting_length, "target_wait_seconds": target_wait,
                 "scale_down_grace": grace, "stabilization": window, "warm_standby": warm_standby}
    try:
        run_cli(console, trace, spec, overrides, start_time=start_time, poll=poll, with_references=compare, png=png,
                as_json=as_json, redelivery=redelivery)
    except (OSError, ValueError, SpecError) as exc:
        fail(str(exc))


def main() -> None:
    """The ``scalejob`` entry point: one clear error line unless ``--debug``."""
    restrict()  # before anything is created: data dir, embedded Redis, logs (app/core/private.py)
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
    try:
        cli()
    except Exception as exc:  # noqa: BLE001 - one clear line unless --debug
        if debug:
            raise
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
