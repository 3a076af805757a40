"""Configuration sections of the sync package (part of the one appliance schema).

Every safety limit is a documented field with a default.  The appliance's
``SiteConfig`` (appliance/config.py) embeds these models; ``sync`` stays usable
on its own.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field, HttpUrl, SecretStr, model_validator

from sync.protocol import Stream
from sync.shared.config_section import ConfigSection, take_secret_files

__all__ = ["Durability", "LinkSettings", "OutboxSettings", "SyncSettings"]


class Durability(StrEnum):
    SYNC = "sync"  # acknowledged means fsynced: survives power loss
    RELAXED = "relaxed"  # written to the WAL, not fsynced: survives a process crash only


class OutboxSettings(ConfigSection):
    path: str = Field(default="var/outbox", description="RocksDB directory of the outbox")
    durability: Durability = Durability.SYNC
    max_bytes: int = Field(
        default=8 << 30, ge=1 << 20, description="size cap on disk; eviction starts above it"
    )
    max_record_bytes: int = Field(
        default=1 << 20, ge=64, description="largest single record; raw payloads go to blobs"
    )
    backpressure_wait_s: float = Field(
        default=5.0, ge=0, description="how long a producer waits for room before OutboxFull"
    )
    ttl_s: dict[Stream, float | None] = Field(
        default_factory=lambda: {
            Stream.CRITICAL: None,
            Stream.EVENTS: None,
            Stream.TELEMETRY: 30 * 86400.0,
            Stream.RAW_REQUESTED: 14 * 86400.0,
            Stream.RAW_SAMPLED: 7 * 86400.0,
        },
        description="time to live per class in seconds (None: forever)",
    )
    group_commit_max_records: int = Field(default=4096, ge=1)
    fsync_in_place_below_ms: float = Field(
        default=0.5,
        ge=0,
        le=10,
        description=(
            "run a group's fsync on the event loop while each of the last 16 took less than"
            " this (a hop to the writer thread costs ~0.1 ms); 0: always on the writer thread"
        ),
    )
    min_free_disk_bytes: int = Field(
        default=64 << 20,
        ge=0,
        description="refuse appends (OutboxDiskFull) when the filesystem has less free space",
    )
    maintenance_interval_s: float = Field(
        default=60.0, gt=0, description="how often TTL expiry runs on its own during appends"
    )
    memory_budget_bytes: int = Field(
        default=64 << 20,
        ge=8 << 20,
        description="RocksDB memtables + block cache; the backlog itself stays on disk",
    )


class LinkSettings(ConfigSection):
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)
    request_timeout_s: float = Field(default=30.0, gt=0)
    probe_interval_s: float = Field(
        default=0.25,
        gt=0,
        description=(
            "while the link is down (no answer at all), try again about this often"
            " (jittered 0.5x-1.5x; longer once the outage is long, see sync.link)"
        ),
    )


class SyncSettings(ConfigSection):
    enabled: bool = True
    cloud_url: HttpUrl | None = Field(
        default=None, description="base URL of the ingest service; None keeps everything local"
    )
    token_file: str | None = Field(
        default=None, description="file holding the device token, mode 0600"
    )
    token: SecretStr | None = Field(
        default=None, description="device token issued by the cloud (prefer token_file)"
    )
    ca_file: str | None = None
    batch_max_records: int = Field(default=10_000, ge=1)
    batch_max_bytes: int = Field(default=4 << 20, ge=1024)
    batch_max_age_s: float = Field(default=5.0, ge=0)
    chunk_min_bytes: int = Field(default=64 << 10, ge=1024)
    chunk_max_bytes: int = Field(default=8 << 20, ge=1024)
    chunk_target_s: float = Field(
        default=5.0, gt=0, description="aim for chunks that take this long at the measured rate"
    )
    bandwidth_cap_bps: float | None = Field(
        default=None, ge=1, allow_inf_nan=False, description="global upload cap, bits per second"
    )
    daily_budget_bytes: dict[Stream, int | None] = Field(
        default_factory=dict, description="per-class byte budget per day on metered links"
    )
    aging_after_s: float = Field(
        default=3600.0, gt=0, description="a class waiting this long gets a guaranteed share"
    )
    aging_share: float = Field(default=0.1, gt=0, le=1)
    handshake_interval_s: float = Field(default=30.0, gt=0)
    link: LinkSettings = Field(default_factory=LinkSettings)

    @model_validator(mode="before")
    @classmethod
    def _read_token_file(cls, data: Any) -> Any:
        return take_secret_files(data, ["token"])
