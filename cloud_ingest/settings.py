"""Configuration of the cloud ingest service: one pydantic schema, every limit documented.

``yardlink ingest serve`` builds an :class:`IngestSettings` from its flags;
tests build one directly with a ``tmp_path`` as ``data_dir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from sync.protocol import SamplingPolicy
from sync.shared.config_section import ConfigSection

__all__ = ["IngestSettings", "TlsSettings"]


class TlsSettings(ConfigSection):
    cert_file: Path = Field(description="PEM certificate chain")
    key_file: Path = Field(description="PEM private key")


class IngestSettings(ConfigSection):
    version: Literal[1] = 1
    data_dir: Path = Field(description="catalog.db, lake/, blobs/ and uploads/ live here")
    host: str = Field(default="127.0.0.1", description="address to listen on")
    port: int = Field(default=8080, ge=0, le=65535, description="0 picks a free port")
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="serve GET /metrics without a token on 127.0.0.1:PORT (scrape-only)",
    )
    tls: TlsSettings | None = Field(default=None, description="serve HTTPS when set")
    max_batch_bytes: int = Field(
        default=64 << 20, ge=1024, description="largest metadata batch body accepted (413 above)"
    )
    max_decoded_batch_bytes: int = Field(
        default=256 << 20,
        ge=1024,
        description="largest size a batch may decode to (413 above): bounds a compression bomb",
    )
    max_upload_bytes: int = Field(
        default=8 << 30, ge=1, description="largest tus upload (Tus-Max-Size)"
    )
    max_json_bytes: int = Field(
        default=4 << 20, ge=1024, description="largest JSON body (handshake, admin)"
    )
    header_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="a request head must be complete this long after the connection opened "
        "or the previous answer (also the idle keep-alive time)",
    )
    body_stall_timeout_s: float = Field(
        default=30.0, gt=0, description="a body that brings no byte for this long is cut"
    )
    max_connections_per_address: int = Field(
        default=128, ge=1, description="open connections per client address (503 above)"
    )
    upload_expiry_s: float = Field(
        default=7 * 86400.0, gt=0, description="an unfinished tus upload is removed after this"
    )
    raw_request_ttl_s: float = Field(
        default=14 * 86400.0, gt=0, description="default lifetime of a raw request"
    )
    sweep_interval_s: float = Field(
        default=60.0, gt=0, description="how often expired uploads and raw requests are swept"
    )
    shutdown_timeout_s: float = Field(
        default=30.0, ge=0, description="how long requests in flight may finish on SIGTERM"
    )
    catalog_synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description="SQLite synchronous mode: FULL survives power loss, NORMAL only a crash",
    )
    release_keyring_file: Path | None = Field(
        default=None,
        description="trusted model-release public keys (a keyring from 'yardlink models "
        "keyring'); none: publishing releases is refused",
    )
    sampling: SamplingPolicy = Field(
        default_factory=SamplingPolicy, description="raw sampling policy sent at each handshake"
    )

    @model_validator(mode="after")
    def _paths_absolute(self) -> IngestSettings:
        if not self.data_dir.is_absolute():
            object.__setattr__(self, "data_dir", self.data_dir.resolve())
        return self

    @property
    def catalog_path(self) -> Path:
        return self.data_dir / "catalog.db"

    @property
    def lake_dir(self) -> Path:
        return self.data_dir / "lake"

    @property
    def blobs_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"
