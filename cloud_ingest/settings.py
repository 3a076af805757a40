"""Configuration of the cloud ingest service: one pydantic schema, every limit documented.

``yardlink ingest serve`` builds an :class:`IngestSettings` from a TOML file
(``--config``, :func:`load_settings`) with its flags on top; tests build one
directly with a ``tmp_path`` as ``data_dir``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator

from cloud_ingest.errors import IngestError
from sync.protocol import SamplingPolicy
from sync.shared.config_section import ConfigSection

__all__ = ["IngestSettings", "SettingsError", "TlsSettings", "load_settings"]

POSTGRES_SCHEMES = ("postgresql", "postgres")


class SettingsError(IngestError):
    """The configuration file or a flag is unusable; the detail names the setting."""

    status, error = 400, "bad_settings"


class TlsSettings(ConfigSection):
    cert_file: Path = Field(description="PEM certificate chain")
    key_file: Path = Field(description="PEM private key")


class IngestSettings(ConfigSection):
    version: Literal[1] = 1
    data_dir: Path = Field(description="catalog.db, lake/, blobs/ and uploads/ live here")
    catalog: str | None = Field(
        default=None,
        description="PostgreSQL URL of a catalog shared by many instances "
        "(postgresql://USER@HOST:PORT/DB; a password from PGPASSWORD or ~/.pgpass); "
        "none: SQLite catalog.db in data_dir (one instance)",
    )
    catalog_pool_size: int = Field(
        default=10, ge=1, le=500, description="PostgreSQL connections this instance may open"
    )
    store: str | None = Field(
        default=None,
        description="S3 object store of the lake, blobs and uploads in progress, shared by "
        "many instances (s3://BUCKET[/PREFIX]?endpoint=http://HOST:PORT&region=R); "
        "none: lake/, blobs/ and uploads/ in data_dir (one instance)",
    )
    store_access_key_id: str | None = Field(
        default=None, description="S3 access key; none: AWS_ACCESS_KEY_ID or the AWS chain"
    )
    store_secret_access_key: SecretStr | None = Field(
        default=None, description="S3 secret key; none: AWS_SECRET_ACCESS_KEY or the AWS chain"
    )
    store_create_bucket: bool = Field(
        default=False, description="create the bucket at start when it does not exist"
    )
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

    @field_validator("catalog")
    @classmethod
    def _catalog_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if urlsplit(url).scheme not in POSTGRES_SCHEMES:
            raise ValueError("a postgresql://USER@HOST:PORT/DB URL is expected")
        return url

    @field_validator("store")
    @classmethod
    def _store_url(cls, url: str | None) -> str | None:
        if url is not None and (urlsplit(url).scheme != "s3" or not urlsplit(url).netloc):
            raise ValueError("an s3://BUCKET[/PREFIX]?endpoint=URL is expected")
        return url

    @property
    def catalog_shown(self) -> str:
        """Where the catalog is, for logs: the URL without its password."""
        if self.catalog is None:
            return str(self.catalog_path)
        parts = urlsplit(self.catalog)
        if parts.password is None:
            return self.catalog
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return parts._replace(netloc=netloc).geturl()

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


def load_settings(config_file: Path | None, overrides: Mapping[str, Any]) -> IngestSettings:
    """Settings from a TOML file (when given) with ``overrides`` (the flags) on top.

    Every problem is one :class:`SettingsError` naming the file and the setting.
    """
    data: dict[str, Any] = {}
    where = ""
    if config_file is not None:
        where = f"{config_file}: "
        try:
            data = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise SettingsError(f"cannot read {config_file}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise SettingsError(f"{config_file}: not UTF-8 text ({exc.reason})") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{config_file}: not valid TOML: {exc}") from None
    data.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return IngestSettings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        setting = ".".join(str(p) for p in first["loc"]) or "(file)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise SettingsError(f"{where}invalid setting {setting}: {first['msg']}{more}") from None
