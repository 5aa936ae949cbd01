"""All of scalejob's configuration in one typed object.

Every field has an environment twin with the prefix ``SCALEJOB_`` (``SCALEJOB_BROKER_URL``,
``SCALEJOB_REDIS_URL``, ``SCALEJOB_DATA_DIR`` ...). Settings are read once per process by
:func:`get_settings` and passed down; nothing else reads ``os.environ`` for configuration.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_LEASE_TTL = 2.0  # s: below this one slow heartbeat (a loaded host, a GC pause) would already cost a running job


class Settings(BaseSettings):
    """Process-wide settings; empty URLs mean "use the embedded Redis"."""

    model_config = SettingsConfigDict(env_prefix="SCALEJOB_", extra="ignore")

    broker_url: str = Field("", description="Celery broker (redis://, rediss://, amqp://); empty = embedded Redis")
    redis_url: str = Field(
        "", description="State Redis (records, output queues, registry); empty = broker if Redis, else embedded"
    )
    data_dir: Path = Field(Path(".scalejob"), description="Embedded Redis files, worker logs, storage dirs")
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    admin_token: SecretStr = Field(
        SecretStr(""), description="Token for /api/services; empty = generated on `scalejob up`"
    )

    visibility_timeout: int = Field(
        24 * 3600, description="Redis broker redelivery timeout, longer than the longest task"
    )
    embedded_appendfsync: Literal["everysec", "always"] = "everysec"
    amqp_quorum: bool = Field(
        False, description="RabbitMQ: declare service queues as quorum queues (x-queue-type=quorum)"
    )
    redis_memory_limit: int = Field(
        0, ge=0,
        description="Bytes: puts answer 507 once the state Redis uses 90% of this (0: its own maxmemory, if set)",
    )
    output_cap_bytes: int = Field(
        1 << 20,
        description="Per-request cap on a command's log output stored in Redis; past it lines are dropped and counted",
    )
    stop_grace: float = Field(
        10.0, description="Seconds between SIGTERM and SIGKILL when a command is cancelled or over max_runtime"
    )

    heartbeat_ttl: float = Field(
        5.0, ge=MIN_LEASE_TTL,
        description="Lease TTL (s): a worker whose heartbeat is older than this is dead and its requests run again "
                    "(a local autoscaler's own workers are requeued at once when they exit; this bounds the rest)",
    )
    heartbeat_interval: float = Field(
        0.0, ge=0,
        description="Worker heartbeat and lease renewal period (s); 0 = derived: min(1, heartbeat_ttl / 4)",
    )
    poll_interval: float = Field(0.5, description="Autoscaler tick (s)")
    autoscaler_lock_ttl: float = Field(
        3.0, description="Autoscaler leader lock TTL (s): a standby takes over this long after the leader dies"
    )
    worker_start_timeout: float = Field(
        300.0,
        description="A worker the autoscaler spawned must register within this (init commands included), "
                    "else it is killed and replaced",
    )
    decisions_kept: int = Field(200, description="Autoscaler decisions kept per service in Redis")
    autoscaler_backend: Literal["local", "kubernetes"] = Field(
        "local", description="Where the autoscaler runs workers: local processes or a Deployment per service"
    )
    k8s_namespace: str = Field(
        "default", description="Kubernetes backend: namespace of the worker Deployments scalejob-<service>"
    )
    record_ttl: int = Field(7 * 24 * 3600, description="How long request records are kept (s)")
    sink_maxlen: int = Field(100_000, description="Approximate cap of each output queue (entries)")
    watch_reclaim_s: float = Field(
        30.0, gt=0,
        description="Watch: an entry pending this long on a consumer that is gone goes to another watcher of its group",
    )
    key_prefix: str = Field("scalejob", description="Prefix of every Redis key scalejob owns")


    @model_validator(mode="after")
    def _heartbeat_keeps_up(self) -> Settings:
        """Derive the heartbeat from the TTL, or refuse one too slow to renew a lease before it expires."""
        if not self.heartbeat_interval:
            self.heartbeat_interval = min(1.0, self.heartbeat_ttl / 4)
        elif self.heartbeat_interval > self.heartbeat_ttl / 3:
            raise ValueError(f"SCALEJOB_HEARTBEAT_INTERVAL ({self.heartbeat_interval:g} s) must be at most a third of "
                             f"SCALEJOB_HEARTBEAT_TTL ({self.heartbeat_ttl:g} s), so a lease is renewed at least twice "
                             "before it can expire; leave it unset to derive it")
        return self


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read from the environment once."""
    return Settings()
