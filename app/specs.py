"""The service JSON: the same keys as an EAS service spec, validated strictly.

Unknown keys are errors (a typo such as ``avg_waiting_lenght`` must not silently fall back to a
default); :func:`load_spec` turns pydantic's errors into one line per problem that names the key
path and, for unknown keys, suggests the nearest known one.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Container(_Strict):
    image: str = ""
    command: str = ""
    port: int | None = Field(None, ge=1, le=65535)
    env: list[dict[str, str]] | dict[str, str] = Field(default_factory=dict)
    init_commands: list[str] = Field(default_factory=list)
    path: str = Field("/", description="HTTP path of the user app that query tasks are POSTed to")
    headers: dict[str, str] = Field(default_factory=dict)

    def env_dict(self) -> dict[str, str]:
        """EAS writes env as ``[{"name":..,"value":..}]``; a plain mapping is accepted too."""
        if isinstance(self.env, dict):
            return dict(self.env)
        return {item["name"]: item.get("value", "") for item in self.env}


class Metadata(_Strict):
    name: str = Field(..., pattern=r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$")
    type: Literal["ScalableJob", "ScalableJobService"] = "ScalableJob"
    instance: int = Field(1, ge=0)
    cpu: float | None = Field(None, gt=0)
    gpu: int = Field(0, ge=0)
    memory: int | None = Field(None, gt=0, description="MB")
    rpc_worker_threads: int = Field(1, ge=1, le=256, alias="rpc.worker_threads")
    enable_webservice: bool = False
    token: str | None = Field(None, min_length=8)
    task_types: list[Literal["command", "query"]] | None = Field(
        None, description="taskType values accepted; default: query when a container has a port, else command"
    )
    max_payload_bytes: int = Field(10 * 1024 * 1024, ge=1)
    max_waiting: int = Field(100_000, ge=1)
    max_runtime: float | None = Field(None, gt=0, description="seconds; a longer command task is ended and failed")
    visibility_timeout: int | None = Field(None, ge=1)


class FrontEnd(_Strict):
    image: str = ""
    port: int | None = Field(None, ge=1, le=65535)
    script: str = ""
    resource: str = ""
    cpu: float | None = Field(None, gt=0)
    memory: int | None = Field(None, gt=0)
    instance_type: str = ""


class ScalableJobOptions(_Strict):
    enable_write_log_to_queue: bool | None = None
    progress_pattern: str | None = None
    log_lines_per_second: float = Field(200.0, gt=0)


class OnZero(_Strict):
    scaleDownGracePeriodSeconds: float = Field(60, ge=0)


class ScaleDown(_Strict):
    stabilizationWindowSeconds: float = Field(1, ge=0)
    maxStepPerTick: int | None = Field(None, ge=1)


class ScaleUp(_Strict):
    maxStepPerTick: int | None = Field(None, ge=1)


class Behavior(_Strict):
    onZero: OnZero = Field(default_factory=OnZero)
    scaleDown: ScaleDown = Field(default_factory=ScaleDown)
    scaleUp: ScaleUp = Field(default_factory=ScaleUp)
    warmStandby: int = Field(0, ge=0)


class Strategies(_Strict):
    avg_waiting_length: float = Field(2, gt=0)


class Autoscaler(_Strict):
    min: int = Field(1, ge=0)
    max: int = Field(10, ge=1)
    strategies: Strategies = Field(default_factory=Strategies)
    behavior: Behavior = Field(default_factory=Behavior)

    @field_validator("max")
    @classmethod
    def _max_at_least_min(cls, v: int, info: Any) -> int:
        if v < info.data.get("min", 0):
            raise ValueError(f"must be >= min ({info.data.get('min')})")
        return v


class LocalStorage(_Strict):
    path: str


class Storage(_Strict):
    mount_path: str
    local: LocalStorage | None = None


class ServiceSpec(_Strict):
    """One service: what its instances run and how many of them there should be."""

    containers: list[Container] = Field(default_factory=lambda: [Container()], min_length=1)
    metadata: Metadata
    front_end: FrontEnd | None = None
    scalable_job: ScalableJobOptions = Field(default_factory=ScalableJobOptions)
    autoscaler: Autoscaler = Field(default_factory=Autoscaler)
    storage: list[Storage] = Field(default_factory=list)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def app(self) -> Container:
        return self.containers[0]

    def allowed_task_types(self) -> list[str]:
        if self.metadata.task_types:
            return list(self.metadata.task_types)
        return ["query", "command"] if self.app.port else ["command"]

    def write_logs_to_queue(self, task_type: str) -> bool:
        """EAS default: on for command (training), off for query (inference)."""
        flag = self.scalable_job.enable_write_log_to_queue
        return (task_type == "command") if flag is None else flag

    def storage_dir(self, data_dir: Path) -> Path:
        """Where command tasks run and write results: the first local storage, else the data dir."""
        for item in self.storage:
            if item.local:
                return Path(item.local.path).expanduser()
        return data_dir / "storage" / self.name

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


class SpecError(ValueError):
    """A spec that cannot be used; ``str()`` is one line per problem, naming the key path."""


def _known_keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_at(path: tuple[Any, ...]) -> type[BaseModel] | None:
    model: Any = ServiceSpec
    for part in path:
        if isinstance(part, int):
            continue
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return None
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        sub = [c for a in candidates for c in (a, *getattr(a, "__args__", ())) if isinstance(c, type) and issubclass(c, BaseModel)]
        if not sub:
            return None
        model = sub[0]
    return model


def _describe(err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    path = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[")
    if err["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        hint = ""
        if parent is not None:
            close = difflib.get_close_matches(str(loc[-1]), _known_keys(parent), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
        return f"{path}: unknown key{hint}"
    return f"{path}: {err['msg']}"


def parse_spec(data: Any) -> ServiceSpec:
    """Validate a decoded spec; raise :class:`SpecError` naming every bad key."""
    try:
        return ServiceSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError("; ".join(_describe(e) for e in exc.errors())) from None


def load_spec(path: str | Path) -> ServiceSpec:
    """Read and validate a spec file."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path}: not valid JSON: {exc}") from None
    return parse_spec(data)
