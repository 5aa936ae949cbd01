"""Who may call the API: the admin token, per-service tokens, frontend tokens bound to a tenant.

Accepted forms: ``Authorization: <token>`` (what ``eas_prediction`` sends) and
``Authorization: Bearer <token>``. Three kinds of token are honoured:

- the admin token (``SCALEJOB_ADMIN_TOKEN``): every route, every service;
- a service's ``metadata.token`` from its spec (stored apart from the spec, see app/queue/services.py);
- issued tokens (:func:`issue`): generated at deploy (printed once) or for a frontend, stored
  only as ``sha256(token) -> {"service", "tenant"}`` under ``keys.tokens()`` (outside the key
  prefix that workers' and the autoscaler's Redis ACL users are granted). A tenant bound to
  a token names who the requests belong to (many frontends sharing one backend service).

Comparisons of secrets use :func:`hmac.compare_digest`; lookups go by digest, so a stored token
can't be read back from Redis. Tokens are never logged nor written into request records.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

import redis

from app.core import keys
from app.core.specs import ServiceSpec
from app.queue import services


class Unauthorized(PermissionError):
    """No token, or one that does not open this service (maps to 401)."""


@dataclass(frozen=True)
class Principal:
    """What a token grants: every service (admin) or one, and the tenant bound to it if any."""

    admin: bool
    service: str | None = None
    tenant: str | None = None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_from_header(value: str | None) -> str | None:
    """The token of an ``Authorization`` header value (bare or ``Bearer``)."""
    if not value:
        return None
    value = value.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return value or None


def issue(r: redis.Redis, service: str, tenant: str | None = None) -> str:
    """Create a token for ``service`` (optionally bound to ``tenant``); only its digest is stored."""
    token = secrets.token_urlsafe(32)
    r.hset(keys.tokens(), digest(token), json.dumps({"service": service, "tenant": tenant}))
    return token


def migrate(r: redis.Redis) -> None:
    """Move tokens kept where earlier releases kept them (``<prefix>:tokens``, inline in specs)
    out of the key prefix; the API and ``scalejob up`` call it on start. Idempotent."""
    legacy: dict[Any, Any] = r.hgetall(keys.legacy_tokens())
    if legacy:
        with r.pipeline() as p:
            p.hset(keys.tokens(), mapping=legacy)
            p.delete(keys.legacy_tokens())
            p.execute()
    services.migrate_tokens(r)


def has_issued(r: redis.Redis, service: str) -> bool:
    return any(json.loads(v).get("service") == service for v in r.hvals(keys.tokens()))


def revoke_service(r: redis.Redis, service: str) -> int:
    """Drop every issued token of ``service`` (when the service is deleted)."""
    gone = [k for k, v in r.hgetall(keys.tokens()).items() if json.loads(v).get("service") == service]
    return int(r.hdel(keys.tokens(), *gone)) if gone else 0


def valid_anywhere(r: redis.Redis, header: str | None, admin_token: str) -> bool:
    """Whether the token opens anything at all (admin, an issued token, a spec's own token).

    Why: "unknown service" or "unknown request" is itself information; it is told only to callers
    with some valid token, everyone else gets 401 whether the thing exists or not.
    """
    token = token_from_header(header)
    if token is None:
        return False
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return True
    if r.hexists(keys.tokens(), digest(token)):
        return True
    found = False
    for own in services.tokens(r):  # no early exit: the time taken does not tell which matched
        found |= hmac.compare_digest(token.encode(), own.encode())
    return found


def authenticate(r: redis.Redis, header: str | None, admin_token: str, spec: ServiceSpec | None = None) -> Principal:
    """The principal of an ``Authorization`` header, for a call on ``spec`` (None: admin routes).

    Raises :class:`Unauthorized` with a message that never echoes the token.
    """
    token = token_from_header(header)
    if token is None:
        raise Unauthorized("missing Authorization header")
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return Principal(admin=True)
    if spec is None:
        raise Unauthorized("this route needs the admin token")
    own = services.token(r, spec.name)
    if own and hmac.compare_digest(token.encode(), own.encode()):
        return Principal(admin=False, service=spec.name)
    raw = r.hget(keys.tokens(), digest(token))
    if raw is not None:
        grant = json.loads(raw)
        if grant.get("service") == spec.name:
            return Principal(admin=False, service=spec.name, tenant=grant.get("tenant"))
    raise Unauthorized(f"invalid token for service {spec.name}")
