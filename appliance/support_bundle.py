"""A support bundle: a ``.tar.gz`` a technician can mail to support, with no secret in it.

What it holds: the effective config with every secret setting replaced by
``<redacted>``, the status, the metrics, the recent audit records, versions of
the software, and the recent logs.  Before anything is written, every secret
the appliance knows (technician and device tokens, the plate secret, the plate
key file and the raw-blob keys, in raw, hex and base64 forms) is searched for
in every file and replaced, so a token that a log line or an error message
quoted does not leave either.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import platform
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from appliance.audit import AuditTrail
from appliance.config import SiteConfig

__all__ = [
    "REDACTED",
    "build_bundle",
    "bundle_for_daemon",
    "collect_logs",
    "known_secrets",
    "redact",
    "scrub",
    "versions",
]

REDACTED = "<redacted>"
_SECRET_KEY_PARTS = ("token", "secret", "password", "private", "credential", "api_key")
_PACKAGES = ("yardlink", "aiohttp", "rocksdict", "onnxruntime", "ai-edge-litert", "textual")
_JOURNAL_UNIT = "yardlink@*"  # the template unit's instances, one per A/B slot
_LOG_LINES = 2000
_MIN_SECRET_CHARS = 8  # shorter values are not searched for (they would match anything)


def redact(data: Any) -> Any:
    """``data`` with the value of every key that names a secret replaced (recursively)."""
    if isinstance(data, Mapping):
        return {
            key: REDACTED
            if value is not None and any(part in str(key).lower() for part in _SECRET_KEY_PARTS)
            else redact(value)
            for key, value in data.items()
        }
    if isinstance(data, list | tuple):
        return [redact(item) for item in data]
    return data


def _value(secret: SecretStr | str | None) -> str | None:
    if isinstance(secret, SecretStr):
        return secret.get_secret_value()
    return secret


def _forms(raw: bytes) -> list[str]:
    forms = [raw.hex(), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()]
    try:
        forms.append(raw.decode().strip())
    except UnicodeDecodeError:
        pass
    return forms


def known_secrets(config: SiteConfig) -> list[str]:
    """Every secret value of this appliance, in the forms a file or log could hold it."""
    found: list[str] = []
    for value in (
        _value(config.local_api.technician_token),
        _value(config.sync.token),
        _value(config.privacy.plate_secret),
    ):
        if value:
            found.append(value)
    data_dir = Path(config.site.data_dir)
    key_files = [Path(config.privacy.plate_key_file or data_dir / "plate.key")]
    keys_dir = Path(config.privacy.blob_keys_dir or data_dir / "blob-keys")
    if keys_dir.is_dir():
        key_files += sorted(p for p in keys_dir.iterdir() if p.is_file())
    for path in key_files:
        try:
            found += _forms(path.read_bytes())
        except OSError:
            continue  # absent or unreadable: nothing of it can be in the bundle either
    return sorted({s for s in found if len(s) >= _MIN_SECRET_CHARS}, key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def collect_logs(lines: int = _LOG_LINES) -> str:
    """The appliance's recent journal lines, or why there are none."""
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        return "no journald on this host: logs are where the daemon's stderr goes\n"
    try:
        done = subprocess.run(
            [journalctl, "-u", _JOURNAL_UNIT, "-n", str(lines), "-o", "cat", "--no-pager"],
            capture_output=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"journalctl failed: {exc}\n"
    text = done.stdout.decode("utf-8", "replace")
    if done.returncode != 0:
        text += f"\njournalctl exit {done.returncode}: {done.stderr.decode('utf-8', 'replace')}"
    return text


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"


def build_bundle(
    *,
    config: SiteConfig,
    status: Any,
    audit: list[Any] | None,
    metrics: str | None,
    logs: str,
    problems: list[str],
    clock: Callable[[], float] = time.time,
) -> bytes:
    """The bundle as gzip'd tar bytes; every member scrubbed of ``known_secrets``."""
    secrets = known_secrets(config)
    now = clock()
    members = {
        "README.txt": "yardlink support bundle: effective config (secrets redacted),"
        " status, metrics, recent audit records, versions, logs.\n"
        + "".join(f"not collected: {problem}\n" for problem in problems),
        "config.json": _json(redact(config.model_dump(mode="json"))),
        "status.json": _json(status),
        "audit.json": _json(audit),
        "metrics.txt": metrics or "",
        "versions.json": _json({**versions(), "bundle_time": now}),
        "logs.txt": logs,
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in members.items():
            data = scrub(text, secrets).encode()
            info = tarfile.TarInfo(f"yardlink-support/{name}")
            info.size, info.mtime, info.mode = len(data), int(now), 0o600
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


async def bundle_for_daemon(
    config: SiteConfig, status: Callable[[], Any], audit: AuditTrail
) -> bytes:
    """The bundle the daemon hands out at ``POST /v1/support-bundle``."""
    snapshot = status()
    logs = await asyncio.to_thread(collect_logs)
    return await asyncio.to_thread(
        lambda: build_bundle(
            config=config,
            status=snapshot,
            audit=audit.recent(),
            metrics=None,
            logs=logs,
            problems=["metrics (scrape /metrics)"],
        )
    )
