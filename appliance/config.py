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
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from appliance._config_sections import (
    CameraSettings,
    PrivacySettings,
    SamplingSettings,
    SourcesSettings,
    TelemetrySettings,
)
from appliance.errors import ConfigError
from appliance.inference.settings import InferenceSettings
from sync.protocol import DEVICE_ID_RE
from sync.settings import OutboxSettings, SyncSettings

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


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteIdentity(_Section):
    device_id: str = Field(pattern=DEVICE_ID_RE.pattern, description="this appliance's id")
    site_id: str = Field(pattern=DEVICE_ID_RE.pattern, description="the yard it serves")
    data_dir: str = Field(default="var", description="root of local state (outbox, blobs)")


MetadataKey = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class LocalApiSettings(_Section):
    host: str = Field(default="127.0.0.1", description="bind address; keep it local")
    port: int = Field(default=8477, ge=0, le=65535)
    unix_socket: str | None = None
    technician_token: str | None = Field(
        default=None, min_length=16, description="bearer token for the local API and the TUI"
    )
    max_frame_bytes: int = Field(default=16 << 20, ge=1024)
    frame_metadata_keys: tuple[MetadataKey, ...] = Field(
        default=("lane", "direction", "transaction_id"),
        max_length=32,
        description="X-Frame-Metadata keys that ride with a frame's events to the cloud;"
        " any other key is refused (400). List only keys that never hold PII",
    )


class SiteConfig(_Section):
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
    models_dir: str = Field(default="models", description="where the pinned model files are")


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_env_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Return a copy of ``data`` with every ``YARDLINK_A__B=v`` set at ``a.b``."""
    merged: dict[str, Any] = _deep_copy(data)
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        node = merged
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = _parse_env_value(raw)
    return merged


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: {exc.error_count()} problem(s)"]
    for error in exc.errors():
        path = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown setting (check the spelling)"
        elif error["type"] == "missing":
            message = "required setting is missing"
        shown = ""
        if error["type"] not in ("missing", "extra_forbidden") and "input" in error:
            shown = f" (got {error['input']!r})"
        lines.append(f"  {path}: {message}{shown}")
    return "\n".join(lines)


def parse_config(
    data: dict[str, Any], *, source: str = "config", environ: Mapping[str, str] | None = None
) -> SiteConfig:
    """Validate a parsed TOML document (with env overrides); ConfigError lists every problem."""
    merged = apply_env_overrides(data, os.environ if environ is None else environ)
    try:
        return SiteConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None


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
