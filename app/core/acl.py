"""Redis ACL users for an external Redis: one per role, each granted only the keys it needs.

Why: with one shared password, whoever reads a worker's environment (a command that escapes,
a leaked pod secret) holds the whole control plane: every token, every spec. With these users a
worker's credential reads specs but cannot change them, and cannot read any token: tokens live
under ``<prefix>-secrets:`` (app/core/keys.py), which no worker or autoscaler pattern matches.

The patterns are built from app/core/keys.py's own functions (called with ``*``), so they follow the
key layout. Roles:

- ``api``: the HTTP ingress and the CLI's service/token commands; every scalejob key and the
  secrets (it checks tokens).
- ``autoscaler``: decisions, samples, health, leader lock and term, plus everything a worker
  needs (the local backend's workers inherit its environment; set the workers' own URL on
  Kubernetes).
- ``worker``: records, leases, the registry, output queues, its Celery queues; read-only specs.

Celery's own keys (service queues ``scalejob.*``, kombu's ``unacked*`` and bindings, pidbox reply
queues) and pub/sub channels (control broadcasts, task events, ``<prefix>:enqueued``) are
granted to every role. The default user stays the admin's (``scalejob up``, ``deploy``).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from app.core import keys

ROLES = ("api", "autoscaler", "worker")
USER = "scalejob-{role}"

# Commands: everything but server administration (CONFIG, ACL, SHUTDOWN, DEBUG, FLUSHALL ...);
# INFO stays: the memory guard (app/queue/memory.py) reads INFO memory. CLIENT SETNAME/ID/INFO
# (connection setup of redis-py and kombu) are in @connection.
COMMANDS = "+@all -@admin -@dangerous +info +client|setname +client|getname +client|id +client|info"

# worker mailboxes, control replies (with priority suffixes)
BROKER = ("scalejob.*", "unacked*", "_kombu.*", "*.celery.pidbox*")


def _star(fn: Callable[[str], str]) -> str:
    """The key pattern of a key family: its key function called with ``*``."""
    return fn("*")


def worker_keys() -> tuple[list[str], list[str]]:
    """(read-write, read-only) key patterns of a worker."""
    rw = [
        _star(keys.request),  # also its :lease and :events
        _star(keys.requests_index),
        keys.running(),
        keys.stale_writes(),
        keys.recovery_lock(),
        _star(keys.worker),  # also its :tasks
        _star(keys.service_workers),
        _star(keys.sink),
        _star(keys.sink_seq),
        _star(keys.input_stream),  # requeues after a lost worker re-put through app/queue/put.py
        _star(keys.input_seq),
        _star(keys.run_times),  # the finish script records the run time (app/queue/run_times.py)
    ]
    ro = [keys.services(), _star(keys.service_version), _star(keys.service_deleting), _star(keys.service_health),
          _star(keys.service_tenants)]
    return rw, ro


def autoscaler_keys() -> tuple[list[str], list[str]]:
    rw, ro = worker_keys()
    own = [keys.autoscaler_lock(), keys.autoscaler_term(), keys.local_workers(), _star(keys.decisions),
           _star(keys.samples), _star(keys.service_health)]
    return rw + own, [k for k in ro if k not in own]


def api_keys() -> tuple[list[str], list[str]]:
    prefix = keys.services().rsplit(":", 1)[0]
    return [f"{prefix}:*", keys.tokens(), keys.service_tokens(), keys.legacy_tokens()], []


def rules(role: str) -> str:
    """The ACL rules of ``role`` (keys, channels, commands), without user name and password."""
    rw, ro = {"api": api_keys, "autoscaler": autoscaler_keys, "worker": worker_keys}[role]()
    parts = ["resetkeys", *(f"~{k}" for k in [*rw, *BROKER]), *(f"%R~{k}" for k in ro), "resetchannels", "&*", COMMANDS]
    return " ".join(parts)


def password(directory: Path, role: str) -> str:
    """The role's password from ``directory/<role>`` (0600), made on first use."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / role
    if not path.exists():
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as out:
            out.write(secrets.token_urlsafe(32))
    return path.read_text(encoding="utf-8").strip()


def aclfile(directory: Path) -> str:
    """An ACL file (``aclfile`` / ``ACL LOAD`` format) of the three users.

    Passwords appear only as SHA-256 digests (``#<hex>``): the file may be shared with whoever
    runs Redis without handing out the credentials. The default user is not in it; append your own
    ``user default on #<sha256> ~* &* +@all`` line (an aclfile must name every user).
    """
    lines = []
    for role in ROLES:
        digest = hashlib.sha256(password(directory, role).encode()).hexdigest()
        lines.append(f"user {USER.format(role=role)} on #{digest} {rules(role)}")
    return "\n".join(lines) + "\n"
