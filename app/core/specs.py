"""The service JSON: the same keys as an EAS service spec, validated strictly.

Unknown keys are errors (a typo such as ``avg_waiting_lenght`` must not silently fall back to a
default); :func:`parse_spec` turns pydantic's errors into one line per problem that names the
key path, says what was expected and, for unknown keys, suggests the nearest known one.
:func:`json_schema` is the same model as a JSON Schema (``scalejob spec-schema``,
``docs/service-spec.schema.json``), so editors can check a spec before it is deployed.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.core.spec_text import SpecTextError, line_of, loads

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class EnvVar(_Strict):
    """One environment variable in the EAS list form ``{"name": .., "value": ..}``."""

    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    value: str = ""


class Container(_Strict):
    """The instance's program: the user app (query tasks) and the environment of command tasks."""

    image: str = Field("", description="Container image; used by the Kubernetes backend, recorded (not run) locally")
    command: str = Field("", description="User app command line, started once per instance (query services)")
    port: int | None = Field(
        None, ge=1, le=65535, description="Port the user app listens on; query tasks are POSTed there"
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        description='Environment of the user app and command tasks: [{"name","value"}] or a {name: value} map',
    )
    init_commands: list[str] = Field(
        default_factory=list, description="Shell commands run once per instance before its first task"
    )
    path: str = Field("/", description="HTTP path of the user app that query tasks are POSTed to")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers sent with every query task")

    @field_validator("env", mode="before")
    @classmethod
    def _env_map_to_list(cls, v: Any) -> Any:
        """A plain ``{name: value}`` map is accepted too; stored in the EAS list form."""
        if isinstance(v, dict):
            return [{"name": k, "value": val} for k, val in v.items()]
        return v

    def env_dict(self) -> dict[str, str]:
        return {item.name: item.value for item in self.env}


class Metadata(_Strict):
    """Who the service is and what one instance gets."""

    name: str = Field(..., description="Service name: 1-63 of a-z 0-9 - _, starting and ending with a letter or digit")
    type: Literal["ScalableJob", "ScalableJobService"] = Field(
        "ScalableJob",
        description="ScalableJob: queue only (independent deployment); ScalableJobService: plus a supervised front end",
    )
    instance: int = Field(1, ge=0, description="Initial instance count (the autoscaler takes over from there)")
    cpu: float | None = Field(None, gt=0, description="CPU cores per instance (Kubernetes requests/limits)")
    gpu: int = Field(
        0, ge=0, description="GPUs per instance; the autoscaler never starts more instances than free GPUs allow"
    )
    memory: int | None = Field(None, gt=0, description="Memory per instance in MB")
    rpc_worker_threads: int = Field(
        1, ge=1, le=256, alias="rpc.worker_threads", description="Tasks one instance runs at once"
    )
    enable_webservice: bool = Field(False, description="Accepted for EAS compatibility")
    token: str | None = Field(
        None, min_length=8, description="Service token (Authorization header); generated when absent"
    )
    task_types: list[Literal["command", "query"]] | None = Field(
        None,
        description="taskType values accepted; default: query and command when containers[0].port is set, else command",
    )
    max_payload_bytes: int = Field(10 * 1024 * 1024, ge=1, description="Largest accepted task payload (HTTP 413 above)")
    max_waiting: int = Field(100_000, ge=1, description="Most waiting tasks of the service (HTTP 429 above)")
    tenant_max_waiting: int | None = Field(
        None, ge=1, description="Most waiting tasks of one tenant (HTTP 429 above); none = no per-tenant cap"
    )
    max_runtime: float | None = Field(None, gt=0, description="seconds; a longer command task is ended and failed")
    visibility_timeout: int | None = Field(
        None, ge=1, description="Redis broker redelivery timeout (s); longer than the longest task"
    )

    @field_validator("name")
    @classmethod
    def _name_shape(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(
                f"expected 1-63 characters of a-z 0-9 - _ starting and ending with a letter or digit, got {v!r}"
            )
        return v


class FrontEnd(_Strict):
    """The front end of a ScalableJobService: a supervised process that feeds the queue."""

    image: str = Field("", description="Front-end image (Kubernetes); recorded locally")
    port: int | None = Field(
        None, ge=1, le=65535, description="Port the front end serves on, if any (exported as PORT)"
    )
    script: str = Field("", description="Command line of the front end, run supervised (restarted when it exits)")
    resource: str = Field("", description="Accepted for EAS compatibility (resource group)")
    cpu: float | None = Field(None, gt=0, description="CPU cores of the front end")
    memory: int | None = Field(None, gt=0, description="Memory of the front end in MB")
    instance_type: str = Field("", description="Accepted for EAS compatibility (machine type)")


class ScalableJobOptions(_Strict):
    """How tasks report back."""

    enable_write_log_to_queue: bool | None = Field(
        None, description="Write task log lines to the output queue; default on for command, off for query"
    )
    progress_pattern: str | None = Field(
        None, description="Regex with one group: a log line matching it sets progress (0-100)"
    )
    log_lines_per_second: float = Field(
        200.0, gt=0, description="Log lines per second per task written to the output queue"
    )

    @field_validator("progress_pattern")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        """Refused at deploy, not at the first log line of the first task (where it would fail every task)."""
        if v is None:
            return v
        try:
            groups = re.compile(v).groups
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        if groups < 1:
            raise ValueError("needs one group that captures the percentage, e.g. '(\\d+)%'")
        return v


class OnZero(_Strict):
    scaleDownGracePeriodSeconds: float = Field(
        60, ge=0, description="Seconds of zero load before the last instance stops"
    )


class ScaleDown(_Strict):
    stabilizationWindowSeconds: float = Field(
        1, ge=0, description="Scale down to the highest desired count seen over this window"
    )
    maxStepPerTick: int | None = Field(None, ge=1, description="Most instances removed per autoscaler tick")


class ScaleUp(_Strict):
    maxStepPerTick: int | None = Field(None, ge=1, description="Most instances added per autoscaler tick")


class Behavior(_Strict):
    onZero: OnZero = Field(default_factory=OnZero)
    scaleDown: ScaleDown = Field(default_factory=ScaleDown)
    scaleUp: ScaleUp = Field(default_factory=ScaleUp)
    warmStandby: int = Field(0, ge=0, description="Instances kept initialised but not consuming, for fast scale-up")


class Strategies(_Strict):
    """One sizing rule: a fixed load per instance (EAS, the default) or a wait-time target."""

    avg_waiting_length: float | None = Field(
        None, gt=0, description="Target load (waiting + running) per instance; 2 unless target_wait_seconds is set",
        json_schema_extra={"default": 2},
    )
    target_wait_seconds: float | None = Field(
        None, gt=0,
        description="Target wait (s) of the last waiting task, sized from observed run times and worker start time; "
        "instead of avg_waiting_length",
    )

    @model_validator(mode="after")
    def _one_rule(self) -> Strategies:
        """Why one or the other: both would mean two answers to how many workers; say so instead of picking one."""
        if self.target_wait_seconds is not None and self.avg_waiting_length is not None:
            raise ValueError("set either avg_waiting_length or target_wait_seconds, not both")
        if self.target_wait_seconds is None and self.avg_waiting_length is None:
            self.avg_waiting_length = 2.0
        return self


class Autoscaler(_Strict):
    """Queue-depth autoscaling: desired = ceil(load / avg_waiting_length) within [min, max], or sized to target_wait_seconds."""  # noqa: E501 - the schema's description, as shipped

    min: int = Field(1, ge=0, description="Fewest instances (0 = scale to zero)")
    max: int = Field(10, ge=1, description="Most instances")
    strategies: Strategies = Field(default_factory=Strategies)
    behavior: Behavior = Field(default_factory=Behavior)

    @field_validator("max")
    @classmethod
    def _max_at_least_min(cls, v: int, info: Any) -> int:
        if "min" in info.data and v < info.data["min"]:
            raise ValueError(f"expected max >= min ({info.data['min']}), got {v}")
        return v


class LocalStorage(_Strict):
    path: str = Field(..., min_length=1, description="Directory on this machine (~ expanded)")


class Storage(_Strict):
    """A directory mounted into the instance; the first local one is the command tasks' cwd."""

    mount_path: str = Field(..., min_length=1, description="Where the instance sees it")
    local: LocalStorage | None = None


class ServiceSpec(_Strict):
    """One service: what its instances run and how many of them there should be."""

    containers: list[Container] = Field(default_factory=lambda: [Container()], min_length=1)
    metadata: Metadata
    front_end: FrontEnd | None = None
    scalable_job: ScalableJobOptions = Field(default_factory=ScalableJobOptions)
    autoscaler: Autoscaler = Field(default_factory=Autoscaler)
    storage: list[Storage] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> ServiceSpec:
        """Cross-key rules; each message starts with the key path it is about."""
        no_front_end = self.front_end is None or not (self.front_end.script or self.front_end.image)
        if self.metadata.type == "ScalableJobService" and no_front_end:
            raise ValueError("front_end.script: required when metadata.type is ScalableJobService")
        if self.metadata.type == "ScalableJob" and self.front_end is not None:
            raise ValueError("front_end: only allowed when metadata.type is ScalableJobService")
        if self.metadata.task_types and "query" in self.metadata.task_types and not self.app.port:
            raise ValueError("metadata.task_types: query tasks need containers[0].port (the user app's port)")
        return self

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


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The model inside ``X``, ``X | None``, ``list[X]``: where an unknown key's siblings live."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _submodel(arg)
        if found is not None:
            return found
    return None


def _model_at(path: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = ServiceSpec
    for part in path:
        if isinstance(part, int):
            continue
        if model is None:
            return None
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return None
        model = _submodel(field.annotation)
    return model


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list, str, int, float, bool, type(None))) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def format_path(loc: tuple[Any, ...]) -> str:
    """``("containers", 0, "env")`` -> ``containers[0].env``; the root is ``(spec)``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(spec)"


def _describe(err: Mapping[str, Any]) -> str:  # noqa: PLR0911 - one early return per pydantic error kind
    loc = tuple(err["loc"])
    path, kind, ctx = format_path(loc), err["type"], err.get("ctx") or {}
    if loc and loc[-1] == "token":  # a secret: never echo it back into logs
        err = {**err, "input": "<hidden>"}
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        hint = ""
        if parent is not None:
            close = difflib.get_close_matches(str(loc[-1]), _known_keys(parent), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]}?" if close else f"; known keys: {', '.join(_known_keys(parent))}"
        return f"{path}: unknown key{hint}"
    if kind == "missing":
        return f"{path}: required key is missing"
    if kind == "value_error":
        msg = err["msg"].removeprefix("Value error, ")
        return msg if not loc else f"{path}: {msg}"
    bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"{path}: expected a number {bounds[kind]} {limit}, got {_short(err['input'])}"
    if kind in ("too_short", "string_too_short"):
        unit = "item(s)" if kind == "too_short" else "character(s)"
        return f"{path}: expected at least {ctx.get('min_length')} {unit}, got {_short(err.get('input'))}"
    if kind in ("too_long", "string_too_long"):
        unit = "item(s)" if kind == "too_long" else "character(s)"
        return f"{path}: expected at most {ctx.get('max_length')} {unit}"
    expected = err["msg"].removeprefix("Input should be ").removeprefix("Input should ").split(", unable")[0]
    return f"{path}: expected {expected}, got {_short(err.get('input'))}"


def parse_spec(data: Any) -> ServiceSpec:
    """Validate a decoded spec; raise :class:`SpecError` naming every bad key."""
    if not isinstance(data, dict):
        raise SpecError(f"(spec): expected a JSON object, got {_short(data)}")
    try:
        return ServiceSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError("; ".join(_describe(e) for e in exc.errors(include_url=False))) from None


def load_spec(path: str | Path) -> ServiceSpec:
    """Read and validate a spec file: JSON5 with ``#`` comments (``app/core/spec_text.py``); errors name the key
    and its line."""
    try:
        text = Path(path).read_text()
        data = loads(text)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read: {exc}") from None
    except SpecTextError as exc:
        raise SpecError(f"{path}: not valid JSON: {exc}") from None
    try:
        return parse_spec(data)
    except SpecError as exc:
        lines = [f"{path}:{n}: {m}" if (n := line_of(text, m.split(":", 1)[0])) else f"{path}: {m}"
                 for m in str(exc).splitlines()]
        raise SpecError("\n".join(lines)) from None


SCHEMA_ID = "service-spec.schema.json"  # relative: resolved against where the file is served


def json_schema() -> dict[str, Any]:
    """The service JSON as a JSON Schema (draft 2020-12), with the keys as users write them."""
    schema = ServiceSpec.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}
