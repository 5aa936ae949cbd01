"""Service lifecycle from the CLI: delete drains or keeps queued tasks (never drops them),
``scalejob services`` lists what runs, ``scalejob token create`` binds a tenant."""

from __future__ import annotations

import json
import subprocess

import pytest

from app.api import auth
from app.queue import services, tenants
from tests.conftest import Stack
from tests.helpers import ROOT, Proc, python_argv, wait_for


def cli(stack: Stack, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**stack.env, "COLUMNS": "200"}  # rich tables: no truncation in a pipe
    return subprocess.run(python_argv("-m", "app.cli", *args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_delete_drain_runs_every_queued_task_then_removes_the_service(stack: Stack) -> None:
    from app.queue.put import PutError

    spec = stack.deploy(stack.command_spec())
    ids = [stack.put(spec, "command", "sleep 0.2", tenant=t) for t in ("default", "a", "b")]
    deleting = Proc(python_argv("-m", "app.cli", "delete", spec.name, "--drain", "--timeout", "60"), stack.env, stack.tmp / "delete.log")
    stack.procs.append(deleting)
    wait_for(lambda: services.deleting(stack.r, spec.name) == "drain", what="the service to be draining")
    with pytest.raises(PutError) as exc:
        stack.put(spec, "command", "true")
    assert exc.value.status == 404 and "being deleted" in exc.value.detail
    stack.start_worker(spec.name)  # (the autoscaler's job in a full stack) works the queue off
    assert deleting.wait(timeout=60) == 0, deleting.output()
    assert all(stack.record(i).state == "succeeded" for i in ids)
    assert spec.name not in services.all_specs(stack.r) and services.deleting(stack.r, spec.name) is None
    assert "deleted" in deleting.output() and "(drained)" in deleting.output()


def test_delete_drain_times_out_with_a_clear_line_and_keeps_the_service(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec())
    stack.put(spec, "command", "true")
    out = cli(stack, "delete", spec.name, "--timeout", "0.5")
    assert out.returncode == 1
    assert f"service {spec.name} still has 1 waiting and 0 running" in out.stderr.replace("\n", " ")
    assert spec.name in services.all_specs(stack.r) and services.deleting(stack.r, spec.name) == "drain"


def test_delete_keep_leaves_queued_tasks_for_a_redeploy(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec())
    ids = [stack.put(spec, "command", "echo kept", tenant=t) for t in ("default", "x")]
    out = cli(stack, "delete", spec.name, "--keep")
    assert out.returncode == 0, out.stderr
    assert "kept 2 queued task(s)" in out.stdout.replace("\n", " ")
    assert spec.name not in services.all_specs(stack.r)
    assert all(stack.record(i).state == "queued" for i in ids)
    stack.deploy(json.loads(spec.to_json()))  # the same name again: its queued tasks run
    stack.start_worker(spec.name)
    assert all(stack.wait_done(i).state == "succeeded" for i in ids)


def test_delete_unknown_service_is_one_line_and_non_zero(stack: Stack) -> None:
    out = cli(stack, "delete", "no-such-svc")
    assert out.returncode == 1 and "unknown service 'no-such-svc'" in out.stderr and "Traceback" not in out.stderr


def test_services_lists_waiting_per_service_over_tenants(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec())
    for t in ("default", "t1", "t1"):
        stack.put(spec, "command", "true", tenant=t)
    out = cli(stack, "services", "--json")
    assert out.returncode == 0, out.stderr
    [row] = [row for row in json.loads(out.stdout) if row["name"] == spec.name]
    assert row["waiting"] == 3 and row["running"] == 0 and row["tenants"] == ["t1"] and row["version"] == 1
    table = cli(stack, "services")
    assert spec.name in table.stdout


def test_token_create_binds_the_tenant(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec())
    out = cli(stack, "token", "create", spec.name, "--tenant", "team-a")
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    principal = auth.authenticate(stack.r, token, "", spec)
    assert principal.tenant == "team-a" and principal.service == spec.name
    assert tenants.known_tenants(stack.r, spec.name) == ["team-a"]  # its queue exists before its first put
    assert token.encode() not in b"".join(stack.r.hkeys(auth.keys.tokens()) + stack.r.hvals(auth.keys.tokens()))
    bad = cli(stack, "token", "create", spec.name, "--tenant", "bad tenant")
    assert bad.returncode == 1 and "tenant 'bad tenant'" in bad.stderr
