"""Operations commands of the ``scalejob`` CLI: services, delete, token, spec-schema, redis-acl, flower.

Kept apart from ``app/cli/main.py`` (the daily submit/worker/up path) and attached to the same
typer app by :func:`register`, so each file stays small.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import redis
import typer
from rich.console import Console
from rich.table import Table

from app.api import auth
from app.cli.flower import FlowerAuthMissing, build, exec_flower
from app.cli.run import fail
from app.core import acl
from app.core.connections import endpoints, state_redis
from app.core.specs import json_schema
from app.queue import services, tenants
from app.queue.workers import list_workers

console = Console()

token_cli = typer.Typer(help="Tokens for frontends and users of a service.", no_args_is_help=True)


def spec_schema() -> None:
    """Print the JSON Schema of the service JSON (also shipped as docs/service-spec.schema.json).

    Example: scalejob spec-schema > service-spec.schema.json
    """
    typer.echo(json.dumps(json_schema(), indent=2))


def list_services(as_json: bool = typer.Option(False, "--json", help="Machine-readable output")) -> None:
    """List deployed services: type, version, waiting and running tasks, workers, tenants.

    Example: scalejob services
    """
    rows = _service_rows(state_redis())
    if as_json:
        typer.echo(json.dumps(rows))
        return
    if not rows:
        console.print("no services deployed (scalejob deploy SPEC.json)")
        return
    table = Table("service", "type", "version", "waiting", "running", "workers", "min-max", "tenants", "state")
    for row in rows:
        table.add_row(
            row["name"], row["type"], str(row["version"]), str(row["waiting"]), str(row["running"]),
            str(row["workers"]), f"{row['min']}-{row['max']}", ",".join(row["tenants"]) or "-",
            "draining" if row["deleting"] else "active",
        )
    console.print(table)


def _service_rows(r: redis.Redis) -> list[dict[str, Any]]:
    """One row per deployed service, by name: what ``services`` prints (or dumps with --json)."""
    rows: list[dict[str, Any]] = []
    for name, spec in sorted(services.all_specs(r).items()):
        waiting, running = services.pending(r, name)
        rows.append({
            "name": name, "type": spec.metadata.type, "version": services.version(r, name),
            "waiting": waiting, "running": running, "workers": len(list_workers(r, name)),
            "min": spec.autoscaler.min, "max": spec.autoscaler.max,
            "tenants": tenants.known_tenants(r, name), "deleting": services.deleting(r, name),
        })
    return rows


def delete(
    name: str = typer.Argument(..., help="Service to delete"),
    drain: bool = typer.Option(
        True, "--drain/--keep", help="--drain: run every queued task first; --keep: leave them queued"
    ),
    timeout: float = typer.Option(3600.0, help="With --drain: seconds to wait for the queue to empty"),
) -> None:
    """Delete a service without ever dropping a task silently.

    --drain (default) refuses new tasks, waits until the queue is empty and no task runs,
    then removes the service (the autoscaler stops its workers). --keep removes it now and
    leaves its queued tasks on the broker: deploying the same name again runs them.

    Example: scalejob delete training --drain --timeout 600
    """
    r = state_redis()
    try:
        services.get(r, name)
    except services.UnknownService:
        fail(f"unknown service {name!r} (scalejob services lists them)")
    if not drain:
        waiting, running = services.pending(r, name)
        services.remove(r, name)
        console.print(
            f"deleted [bold]{name}[/bold]; kept {waiting} queued task(s) on its queues "
            f"({', '.join(tenants.service_queues(r, name))}); {running} running task(s) finish first. "
            f"Deploy {name} again to run the queued ones."
        )
        return
    services.begin_drain(r, name)
    _wait_until_drained(r, name, timeout)
    services.remove(r, name)
    tenants.forget(r, name)
    auth.revoke_service(r, name)  # issued tokens must not open a later service of the same name
    console.print(f"deleted [bold]{name}[/bold] (drained)")


def _wait_until_drained(r: redis.Redis, name: str, timeout: float) -> None:
    """Print the queue as it empties; fail (the service stays draining) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        waiting, running = services.pending(r, name)
        if (waiting, running) != last:
            console.print(f"draining {name}: {waiting} waiting, {running} running")
            last = (waiting, running)
        if waiting == 0 and running == 0:
            return
        if time.monotonic() > deadline:
            fail(
                f"service {name} still has {waiting} waiting and {running} running task(s) after {timeout:.0f}s; "
                f"it stays in draining state (no new tasks). Run the delete again, or use --keep"
            )
        time.sleep(0.5)


@token_cli.command("create")
def token_create(
    service: str = typer.Argument(..., help="Service the token opens"),
    tenant: str | None = typer.Option(
        None, help="Tenant the token's tasks belong to (fair sharing); none: the tenant tag or default"
    ),
) -> None:
    """Issue a token for SERVICE, optionally bound to a tenant; printed once, stored only hashed.

    Example: scalejob token create inference --tenant team-a
    """
    r = state_redis()
    try:
        services.get(r, service)
        if tenant is not None:
            tenants.register(r, service, tenant)  # its queue exists before its first task
    except services.UnknownService:
        fail(f"unknown service {service!r}; deploy it first (scalejob deploy SPEC.json)")
    except tenants.TenantError as exc:
        fail(exc.detail)
    typer.echo(auth.issue(r, service, tenant))


def redis_acl(
    secrets_dir: Path = typer.Option(
        ..., "--dir", help="Directory of the roles' passwords (0600 files api, autoscaler, worker; made if missing)"
    ),
) -> None:
    """Print a Redis ACL file with one user per role (api, autoscaler, worker), passwords hashed.

    Each role gets only its keys: a worker's credential reads specs but cannot change them and
    cannot read tokens. Give each process its own URL, e.g.
    SCALEJOB_REDIS_URL=redis://scalejob-worker:$(cat DIR/worker)@redis:6379/0. See docs/security.md.

    Example: scalejob redis-acl --dir /etc/scalejob/redis-users > users.acl
    """
    typer.echo(acl.aclfile(secrets_dir), nl=False)


def flower(
    port: int = typer.Option(5555, help="Port of the dashboard"),
    address: str = typer.Option("127.0.0.1", help="Bind address"),
    insecure: bool = typer.Option(False, help="Allow running without a login"),
) -> None:
    """Run Flower (Celery dashboard) for scalejob's workers, with basic auth.

    Credentials: SCALEJOB_FLOWER_USER + SCALEJOB_FLOWER_PASSWORD, or FLOWER_BASIC_AUTH=user:pass.

    Example: SCALEJOB_FLOWER_USER=admin SCALEJOB_FLOWER_PASSWORD=s3cret scalejob flower --port 5555
    """
    try:
        cmd = build(address, port, insecure, endpoints().broker_url)
    except FlowerAuthMissing as exc:
        fail(str(exc))
    exec_flower(cmd)


def register(cli: typer.Typer) -> None:
    """Add the operations commands to ``cli``, in the order ``--help`` lists them."""
    cli.command("spec-schema")(spec_schema)
    cli.command("services")(list_services)
    cli.command("delete")(delete)
    cli.add_typer(token_cli, name="token")
    cli.command("redis-acl")(redis_acl)
    cli.command("flower")(flower)
