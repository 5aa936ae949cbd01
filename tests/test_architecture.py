"""The layering rules, checked from the code's own imports so they stay true.

Imports run one way: ``app.cli`` -> ``app.api``, ``app.ui``, ``app.eas`` -> ``app.queue`` ->
``app.core``. ``workers`` and ``autoscale`` use ``app.queue`` and ``app.core`` only, and not each
other (they meet in Redis and the broker, never in code). ``app`` imports ``workers`` or
``autoscale`` only in ``app.cli``, which starts them. The scaling policy is a pure function: its
modules import the standard library only. Every import counts: top level, inside a function, or
under ``TYPE_CHECKING``; an upward import hidden in a function is still upward.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGES = ("app", "workers", "autoscale")
# layer of each part of the house: a module may import its own layer or a lower one
LAYERS = {"app.core": 1, "app.queue": 2, "app.eas": 3, "app.api": 3, "app.ui": 3, "app.cli": 4}
# the documented entry points that only re-export: each may import just the module it names
SHIMS = {"app.celery_app": "app.core.celery_app", "app.sdk": "app.eas.client"}
# the policy and what it plans with: standard library only
PURE = {"autoscale.policy", "autoscale.target_wait"}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in the file, resolved to a module of ours or a top-level name."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield node.lineno, sub if sub in MODULES else base


def _ours(target: str) -> str | None:
    """The module of ours that ``target`` names (a package's submodule wins), or None."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def _part(module: str) -> str:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return prefix
    return module.split(".", maxsplit=1)[0]  # "workers", "autoscale", or "app" itself


def _edges() -> list[tuple[str, int, str]]:
    return [(src, line, dst) for src, path in sorted(MODULES.items()) for line, target in _imports(src, path)
            if (dst := _ours(target)) is not None and dst != src]


def _wrong(src: str, dst: str) -> str | None:
    """Why ``src`` may not import ``dst``, or None when it may."""
    if src in SHIMS:
        return None if dst == SHIMS[src] else "a shim re-exports only its target"
    a, b = _part(src), _part(dst)
    if a in ("workers", "autoscale"):
        if b in ("workers", "autoscale") and a != b:
            return "workers and autoscale meet in Redis, not in code"
        if b in LAYERS and LAYERS[b] > LAYERS["app.queue"]:
            return f"{a} uses app.queue and app.core only"
        if b == "app" or dst in SHIMS:
            return f"{a} imports the layer itself, not the documented shim"
        return None
    if b in ("workers", "autoscale"):
        return None if a == "app.cli" else "only app.cli starts workers and the autoscaler"
    if dst in SHIMS:
        return "code imports the real module, not the documented shim"
    if a in LAYERS and b in LAYERS and LAYERS[b] > LAYERS[a]:
        return f"{a} (layer {LAYERS[a]}) imports upward into {b} (layer {LAYERS[b]})"
    return None


def test_imports_run_one_way() -> None:
    bad = [f"{MODULES[src].relative_to(ROOT)}:{line} imports {dst}: {why}"
           for src, line, dst in _edges() if (why := _wrong(src, dst))]
    assert not bad, "\n".join(bad)


def test_the_policy_imports_the_standard_library_only() -> None:
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    bad = []
    for name in sorted(PURE):
        for line, target in _imports(name, MODULES[name]):
            top = target.split(".")[0]
            if top not in stdlib and _ours(target) not in PURE:
                bad.append(f"{MODULES[name].relative_to(ROOT)}:{line} imports {target}")
    assert not bad, "\n".join(bad)


def test_no_module_imports_itself_through_a_circle() -> None:
    graph: dict[str, set[str]] = {}
    for src, _line, dst in _edges():
        graph.setdefault(src, set()).add(dst)
    circles = set()
    for start, imported in graph.items():  # a circle through `start`: a path from one of its imports back to it
        stack, seen = [(d, (start, d)) for d in imported], set()
        while stack:
            node, trail = stack.pop()
            if node == start:
                circles.add(" -> ".join(trail))
                break
            if node in seen:
                continue
            seen.add(node)
            stack.extend((d, (*trail, d)) for d in graph.get(node, ()))
    # a package's __init__ that only re-exports lazily is no circle; everything else is
    assert not circles, "\n".join(sorted(circles))


@pytest.mark.parametrize("rule", [("app.queue.records", "app.api.main"), ("workers.tasks", "autoscale.policy"),
                                  ("autoscale.controller", "app.cli.main"), ("app.core.specs", "app.queue.records")])
def test_the_rules_catch_an_upward_import(rule: tuple[str, str]) -> None:
    """The checker itself can fail: each of these made-up imports breaks a rule."""
    assert _wrong(*rule)


# Each Redis key family has one owner: the only module (besides app.core.keys, which names them,
# and app.core.acl, which grants them to roles) that builds those keys. Everything else asks the owner.
OWNERS = {
    "app.queue.services": ("services", "service_version", "service_tokens", "service_deleting"),
    "app.queue.streams": ("input_stream", "input_seq"),
    "app.queue.records": ("request", "requests_index", "request_lease", "running", "stale_writes"),
    "app.queue.output": ("sink", "sink_seq", "request_events"),
    "app.queue.recovery": ("recovery_lock",),
    "app.queue.workers": ("worker", "worker_tasks", "service_workers"),
    "app.queue.decisions": ("decisions", "samples"),
    "app.queue.run_times": ("run_times",),
    "app.queue.health": ("service_health",),
    "app.queue.frontends": ("frontend",),
    "app.queue.tenants": ("service_tenants",),
    "app.queue.put": ("enqueue_channel",),
    "app.api.auth": ("tokens", "legacy_tokens"),
    "autoscale.leader": ("autoscaler_lock", "autoscaler_term"),
    "autoscale.backends.procs": ("local_workers",),
}
KEY_READERS = {"app.core.keys", "app.core.acl"}
# Not Redis keys: the broker queue a service's workers consume (a contract, ``scalejob.<service>``).
NAMES = {"celery_queue"}
# One Lua script that must be atomic across families takes its KEYS from the module that runs it;
# the Lua that touches each family is still the owner's (app/queue/lua/lib/). Exactly these:
ATOMIC = {
    # put.lua: the record, its index entry and the input-stream mirror, refused while deleting
    "app.queue.put": {"request", "requests_index", "input_stream", "input_seq", "service_deleting"},
    # task_begin/task_end.lua: lease, record, the worker's task set, run times, stale-write count
    "app.queue.lifecycle": {"request", "request_lease", "running", "requests_index", "worker_tasks", "stale_writes",
                            "run_times"},
    # snapshot.lua: each busy worker's first task's start time, read with the registry in one trip
    "app.queue.workers": {"request"},
}


def test_each_redis_key_family_is_built_by_its_owner_only() -> None:
    owner_of = {fn: owner for owner, fns in OWNERS.items() for fn in fns}
    bad = []
    for name, path in sorted(MODULES.items()):
        if name in KEY_READERS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "keys":
                owner = owner_of.get(node.attr)
                if node.attr in NAMES or node.attr in ATOMIC.get(name, ()):
                    continue
                if owner is None:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} keys.{node.attr} has no owner in OWNERS")
                elif owner != name:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} builds keys.{node.attr}, owned by {owner}")
    assert not bad, "\n".join(bad)


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def test_no_module_over_400_lines_and_no_function_over_60() -> None:
    """Small parts stay readable: a module says one thing, a function does one step (nested ones count whole)."""
    bad = []
    for _name, path in sorted(MODULES.items()):
        src = path.read_text()
        if (n := len(src.splitlines())) > MAX_MODULE_LINES:
            bad.append(f"{path.relative_to(ROOT)}: {n} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    assert not bad, "\n".join(bad)
