"""Every Redis key scalejob owns, named in one place.

Each key family has one owner module (noted beside it); nobody else writes it.
"""

from __future__ import annotations

from app.core.settings import get_settings


def _p() -> str:
    return get_settings().key_prefix


def celery_queue(service: str) -> str:
    """The Celery queue a service's workers consume (a contract: ``scalejob.<service>``)."""
    return f"scalejob.{service}"


# app/queue/services.py
def services() -> str:
    return f"{_p()}:services"  # hash name -> spec JSON


def service_version(service: str) -> str:
    return f"{_p()}:svc:{service}:version"


# app/queue/output.py — output queue (Redis Stream) and its index counter
def sink(service: str) -> str:
    return f"{_p()}:{service}:sink"


def sink_seq(service: str) -> str:
    return f"{_p()}:{service}:sink:seq"


# app/queue/put.py — input queue mirror and index counter
def input_stream(service: str) -> str:
    return f"{_p()}:{service}:input"


def input_seq(service: str) -> str:
    return f"{_p()}:{service}:input:seq"


# app/queue/records.py
def request(request_id: str) -> str:
    return f"{_p()}:req:{request_id}"


def requests_index(service: str) -> str:
    return f"{_p()}:{service}:requests"  # zset request_id -> queued_at


def stale_writes() -> str:
    # counter: outcome/progress/log writes refused from a stale epoch (app/queue/records.py)
    return f"{_p()}:stale_writes"


def request_lease(request_id: str) -> str:
    return f"{_p()}:req:{request_id}:lease"


def running() -> str:
    return f"{_p()}:running"  # hash request_id -> worker name, for the recovery loop


def recovery_lock() -> str:
    return f"{_p()}:recovery:leader"


def request_events(request_id: str) -> str:
    return f"{_p()}:req:{request_id}:events"  # app/queue/output.py: stream of one request's events


# app/queue/workers.py
def worker(name: str) -> str:
    return f"{_p()}:worker:{name}"


def worker_tasks(name: str) -> str:
    return f"{_p()}:worker:{name}:tasks"  # set of request ids running on it


def service_workers(service: str) -> str:
    return f"{_p()}:{service}:workers"  # set of worker names


# autoscale/
def enqueue_channel() -> str:
    return f"{_p()}:enqueued"  # pub/sub: service names that just got work


def autoscaler_lock() -> str:
    return f"{_p()}:autoscaler:leader"


# autoscale/leader.py — incremented on every acquisition of the lock: the fencing term
def autoscaler_term() -> str:
    return f"{_p()}:autoscaler:term"


def decisions(service: str) -> str:
    return f"{_p()}:{service}:decisions"  # list of decision JSON, newest first (LPUSH + LTRIM)


def samples(service: str) -> str:
    # list of {"t", "waiting", "running", "workers", "desired", "reason"} JSON, oldest first (RPUSH + LTRIM)
    return f"{_p()}:{service}:samples"


# app/queue/run_times.py (written inside app/queue/lifecycle.py's finish script) — recent run times
def run_times(service: str) -> str:
    return f"{_p()}:{service}:run_times"  # list of run seconds of finished tasks, newest first (LPUSH + LTRIM)


# autoscale/backends/local.py — processes the local backend started, so a restarted autoscaler adopts them
def local_workers() -> str:
    # hash worker name -> {"pid", "host", "service", "standby", "log", "term", "start_by"} JSON
    return f"{_p()}:autoscaler:local"



# app/queue/health.py — a service's failed worker starts and crash-loop backoff
def service_health(service: str) -> str:
    # string: {"health", "failures", "backoff_until", "last_failure", "spec_hash"} JSON
    return f"{_p()}:svc:{service}:health"


# app/cli/frontends.py — the front end of an integrated service, as the process that runs it last saw it
def frontend(service: str) -> str:
    # string: {"state", "pid", "restarts", "last_failure", ...} JSON, with a TTL
    return f"{_p()}:svc:{service}:frontend"


# Secrets live outside ``<prefix>:*`` on purpose: the Redis ACL users of workers and the
# autoscaler (app/core/acl.py) are granted key patterns under ``<prefix>:``, and Redis ACLs have no
# "all but" pattern, so a key under the prefix could never be kept from them.
def _secrets() -> str:
    return f"{_p()}-secrets"


# app/api/auth.py — issued tokens, stored only as sha256 hex digests
def tokens() -> str:
    return f"{_secrets()}:tokens"  # hash sha256(token) -> {"service", "tenant"} JSON


def legacy_tokens() -> str:
    return f"{_p()}:tokens"  # where tokens lived before they moved out of the prefix; migrated by app/api/auth.py


# app/queue/services.py — each service's own ``metadata.token``, kept apart from its spec (which workers read)
def service_tokens() -> str:
    return f"{_secrets()}:service-tokens"  # hash service name -> token (in clear: signatures need it)


# benchmarks/ — timings written by the plain-Celery baseline tasks of one benchmark run
def bench(run: str) -> str:
    return f"{_p()}:bench:{run}"


# app/queue/tenants.py — tenants with their own Celery queue (fair sharing)
def service_tenants(service: str) -> str:
    return f"{_p()}:{service}:tenants"  # set of tenant names (the default tenant is not listed)


# app/queue/services.py — a service being deleted: puts are refused while it drains
def service_deleting(service: str) -> str:
    return f"{_p()}:svc:{service}:deleting"  # string: "drain" or "keep"
