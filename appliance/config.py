"""The one configuration schema of the appliance: ``site.toml`` plus ``YARDLINK_`` overrides.

One pydantic v2 model per concern, ``extra="forbid"`` everywhere so a typo is
an error, a ``version`` field so old files are recognised, and every safety
limit a documented field with a default.

Environment overrides: ``YARDLINK_<SECTION>__<FIELD>=value`` (double underscore
between levels), e.g. ``YARDLINK_OUTBOX__MAX_BYTES=1073741824`` or
``YARDLINK_SYNC__CLOUD_URL=https://ingest.example``.  Values are parsed as TOML
scalars when they can be (numbers, booleans, arrays), else taken as strings.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from appliance._config_sections import (
    CameraSettings,
    PrivacySettings,
    SamplingSettings,
    SourcesSettings,
    TelemetrySettings,
)
from appliance.errors import ConfigError
from appliance.inference.settings import InferenceSettings
from appliance.local_auth import MAKE_TOKEN_HINT, is_loopback_host, token_problem
from appliance.updates.settings import UpdateSettings
from sync.protocol import DEVICE_ID_RE
from sync.settings import OutboxSettings, SyncSettings
from sync.shared.config_section import ConfigSection, take_secret_files

__all__ = [
    "CONFIG_VERSION",
    "CameraSettings",
    "InferenceSettings",
    "PrivacySettings",
    "SamplingSettings",
    "SourcesSettings",
    "TelemetrySettings",
    "ENV_PREFIX",
    "LocalApiSettings",
    "SiteConfig",
    "SiteIdentity",
    "load_config",
    "parse_config",
]

CONFIG_VERSION = 1
ENV_PREFIX = "YARDLINK_"


class SiteIdentity(ConfigSection):
    device_id: str = Field(pattern=DEVICE_ID_RE.pattern, description="this appliance's id")
    site_id: str = Field(pattern=DEVICE_ID_RE.pattern, description="the yard it serves")
    data_dir: str = Field(default="var", description="root of local state (outbox, blobs)")


MetadataKey = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class LocalApiSettings(ConfigSection):
    host: str = Field(default="127.0.0.1", description="bind address; keep it local")
    port: int = Field(default=8477, ge=0, le=65535)
    unix_socket: str | None = None
    technician_token_file: str | None = Field(
        default=None, description="file holding the technician token, mode 0600"
    )
    technician_token: SecretStr | None = Field(
        default=None, description="bearer token for the local API and the TUI (prefer the file)"
    )
    max_frame_bytes: int = Field(default=16 << 20, ge=1024)
    push_mode: Literal["durable", "queued"] = Field(
        default="durable",
        description="POST /v1/frames: durable = written to the spool (fsync'd) before the"
        " 201, lost by no crash; queued = held in memory and answered 202, faster, and lost"
        " if the appliance is killed before it is processed (docs/OPERATIONS.md)",
    )
    frame_metadata_keys: tuple[MetadataKey, ...] = Field(
        default=("lane", "direction", "transaction_id"),
        max_length=32,
        description="X-Frame-Metadata keys that ride with a frame's events to the cloud;"
        " any other key is refused (400). List only keys that never hold PII",
    )

    @model_validator(mode="before")
    @classmethod
    def _read_token_file(cls, data: Any) -> Any:
        return take_secret_files(data, ["technician_token"])

    @field_validator("technician_token")
    @classmethod
    def _fit_token(cls, token: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if token is not None and (problem := token_problem(token.get_secret_value())):
            file = info.data.get("technician_token_file")
            where = f"the token in {file}" if file else "this token"
            raise ValueError(f"{where} is {problem}; {MAKE_TOKEN_HINT}")
        return token

    @model_validator(mode="after")
    def _guarded_beyond_loopback(self) -> Self:
        if (
            self.technician_token is None
            and self.unix_socket is None
            and not is_loopback_host(self.host)
        ):
            raise ValueError(
                f"host {self.host!r} lets other machines reach the local API, and no"
                f" technician_token is set, so anyone on that network could push frames and"
                f' read the status; bind host = "127.0.0.1" or {MAKE_TOKEN_HINT}'
            )
        return self


class SiteConfig(ConfigSection):
    """Root of ``site.toml``."""

    version: Literal[1] = Field(description="schema version of this file")
    site: SiteIdentity
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    local_api: LocalApiSettings = Field(default_factory=LocalApiSettings)
    sources: SourcesSettings = Field(default_factory=SourcesSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    updates: UpdateSettings = Field(default_factory=UpdateSettings)  # model OTA (docs/OTA.md)
    models_dir: str = Field(default="models", description="where the pinned model files are")


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


# Settings whose value is a secret: never echoed in an error, shown masked by check-config.
SECRET_SETTINGS = frozenset({"technician_token", "token", "plate_secret"})


def env_override_paths(environ: Mapping[str, str]) -> dict[tuple[str, ...], str]:
    """Every ``YARDLINK_A__B`` variable as its settings path ``("a", "b")`` -> its name."""
    paths: dict[tuple[str, ...], str] = {}
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and "__" in name:
            paths[tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))] = name
    return paths


def apply_env_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Return a copy of ``data`` with every ``YARDLINK_A__B=v`` set at ``a.b``."""
    merged: dict[str, Any] = _deep_copy(data)
    for path, name in env_override_paths(environ).items():
        node = merged
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = _parse_env_value(environ[name])
    return merged


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}


def _env_source(loc: tuple[str, ...], overrides: Mapping[tuple[str, ...], str]) -> str:
    """`` (from YARDLINK_X__Y)`` when an environment variable set this setting or its part."""
    names = [name for path, name in overrides.items() if loc[: len(path)] == path]
    names += [name for path, name in overrides.items() if path[: len(loc)] == loc and loc]
    return f" (from {', '.join(sorted(set(names)))})" if names else ""


def _format_errors(
    exc: ValidationError, source: str, overrides: Mapping[tuple[str, ...], str]
) -> str:
    lines = [f"{source}: {exc.error_count()} problem(s)"]
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        path = ".".join(loc) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown setting (check the spelling)"
        elif error["type"] == "missing":
            message = "required setting is missing"
        shown = ""
        secret = bool(loc) and loc[-1] in SECRET_SETTINGS
        if (
            error["type"] not in ("missing", "extra_forbidden")
            and "input" in error
            and not secret
            and not isinstance(error["input"], dict)  # a section: may hold secrets
        ):
            shown = f" (got {error['input']!r})"
        lines.append(f"  {path}: {message}{shown}{_env_source(loc, overrides)}")
    return "\n".join(lines)


def parse_config(
    data: dict[str, Any], *, source: str = "config", environ: Mapping[str, str] | None = None
) -> SiteConfig:
    """Validate a parsed TOML document (with env overrides); ConfigError lists every problem.

    A problem with a setting that an environment variable set names that variable.
    """
    environ = os.environ if environ is None else environ
    merged = apply_env_overrides(data, environ)
    try:
        return SiteConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source, env_override_paths(environ))) from None


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> SiteConfig:
    """Read and validate ``site.toml``; every problem is reported with its path in the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, source=str(path), environ=environ)
