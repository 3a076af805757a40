"""The site config of an appliance run as a process against a local ingest service, as
the end-to-end tests start it: data under ``root/site/var``, the real models, batches
closed and handshakes made quickly, a link that retries and probes at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yardlink.localstack import write_site_toml

__all__ = ["appliance_site_toml"]

REPO = Path(__file__).resolve().parents[2]


def appliance_site_toml(
    root: Path,
    cloud_url: str,
    token: str,
    *,
    device: str,
    site: str,
    camera: str,
    technician: str,
    sync: dict[str, Any] | None = None,
    link: dict[str, Any] | None = None,
    **sections: dict[str, Any],
) -> Path:
    """Write ``root/site/site.toml``; ``sync`` and ``link`` add to those sections,
    ``sections`` are more sections (``updates=``, ``sampling=``...)."""
    var = root / "site" / "var"
    link_settings = {"backoff_initial_s": 0.05, "backoff_max_s": 0.5, "probe_interval_s": 0.5}
    sync_settings = {
        "cloud_url": cloud_url,
        "token": token,
        "batch_max_age_s": 0.3,
        "handshake_interval_s": 1.0,
        **(sync or {}),
        "link": link_settings | (link or {}),
    }
    return write_site_toml(
        root / "site" / "site.toml",
        {
            "version": 1,
            "models_dir": str(REPO / "models"),
            "site": {"device_id": device, "site_id": site, "data_dir": str(var)},
            "outbox": {"path": str(var / "outbox")},
            "sync": sync_settings,
            "local_api": {"port": 0, "technician_token": technician},
            "sources": {"queue_bound": 32, "cameras": [{"id": camera}]},
            "telemetry": {"interval_s": 3600},
            **sections,
        },
    )
