"""Appliance-only sections of ``site.toml``: frame sources, privacy, telemetry, sampling."""

from __future__ import annotations

from typing import Any, Self

from pydantic import Field, SecretStr, model_validator

from sync.protocol import DEVICE_ID_RE
from sync.shared.config_section import ConfigSection, take_secret_files

__all__ = [
    "CameraSettings",
    "PrivacySettings",
    "SamplingSettings",
    "SourcesSettings",
    "TelemetrySettings",
]


class CameraSettings(ConfigSection):
    """One camera: frames pushed over the local API or dropped into the spool name it by id."""

    id: str = Field(pattern=DEVICE_ID_RE.pattern, description="camera id used by pushers")
    synthetic_fps: float = Field(
        default=0.0, ge=0, le=60, description=">0: a seeded synthetic camera feeds this id (demo)"
    )
    synthetic_seed: int = 0


class SourcesSettings(ConfigSection):
    cameras: list[CameraSettings] = Field(default_factory=list)
    spool_dir: str | None = Field(
        default=None, description="watched directory: <spool>/<camera_id>/*.jpg; None = off"
    )
    spool_poll_s: float = Field(default=0.5, gt=0, le=60)
    spool_retry_initial_s: float = Field(
        default=1.0,
        gt=0,
        le=3600,
        description="after a spool frame's results could not be stored (outbox full, disk"
        " full), nothing more is read from the spool for this long; doubled per failure",
    )
    spool_retry_max_s: float = Field(
        default=60.0, gt=0, le=3600, description="cap of that wait; reset by a stored frame"
    )
    queue_bound: int = Field(default=8, ge=1, le=10_000, description="frames queued per camera")

    @model_validator(mode="after")
    def _retry_cap_not_below_the_first_wait(self) -> Self:
        if self.spool_retry_max_s < self.spool_retry_initial_s:
            raise ValueError("spool_retry_max_s must be >= spool_retry_initial_s")
        return self


class PrivacySettings(ConfigSection):
    plate_key_file: str | None = Field(
        default=None, description="file holding the per-site plate HMAC key (created if missing)"
    )
    plate_secret_file: str | None = Field(
        default=None, description="file holding the plate HMAC key as text, mode 0600"
    )
    plate_secret: SecretStr | None = Field(
        default=None, min_length=16, description="plate HMAC key given inline (overrides file)"
    )
    blob_keys_dir: str | None = Field(
        default=None, description="one AES-256 key per UTC day; default <data_dir>/blob-keys"
    )
    retention_days: int = Field(default=7, ge=1, le=365, description="raw frames kept on site")
    keep_raw_frames: bool = Field(default=True, description="store every original, encrypted")

    @model_validator(mode="before")
    @classmethod
    def _read_secret_file(cls, data: Any) -> Any:
        return take_secret_files(data, ["plate_secret"])


class TelemetrySettings(ConfigSection):
    interval_s: float = Field(default=60.0, gt=0, le=3600, description="telemetry record period")


class SamplingSettings(ConfigSection):
    every_n_frames: int = Field(default=1000, ge=0, description="0 disables periodic sampling")
    max_per_hour: int = Field(default=60, ge=0)
    low_confidence_below: float = Field(default=0.5, ge=0, le=1)
    low_confidence_every_n: int = Field(default=10, ge=0, description="0: no extra low-conf")
