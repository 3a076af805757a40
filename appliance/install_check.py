"""``yardlink appliance check``: diagnose an installation, one line per check.

In the manner of ``iotedge check``: each check says ok / warn / fail, what it
found, and what to do.  The command's exit code is the worst level (0 ok,
1 warn, 2 fail).  The checks read and probe; the only things they write are a
temporary file in the data directory and one sync handshake with the cloud.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from pydantic import SecretStr

from appliance.config import SiteConfig, load_config
from appliance.errors import ApplianceError, error_summary
from appliance.inference.model_files import MODEL_FILES, ModelFileError, verify
from appliance.tui.client import ApplianceClient, ApplianceRefused, ApplianceUnreachable
from sync.cloud_client import CloudClient
from sync.errors import CloudRejected, SyncError
from sync.outbox import Outbox
from sync.protocol import SyncRequest

__all__ = ["Check", "Level", "api_url", "run_checks", "secret_value"]

FREE_WARN_BYTES = 1 << 30  # warn below 1 GiB free on the data disk
CLOCK_FLOOR = 1767225600.0  # 2026-01-01 UTC: an earlier clock was never set
SKEW_WARN_S, SKEW_FAIL_S = 30.0, 300.0


class Level(IntEnum):
    OK = 0
    WARN = 1
    FAIL = 2


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    level: Level
    found: str
    action: str = ""

    def line(self) -> str:
        todo = f"\n       -> {self.action}" if self.action and self.level else ""
        return f"[{self.level.name.lower():>4}] {self.name}: {self.found}{todo}"


def secret_value(secret: SecretStr | str | None) -> str | None:
    return secret.get_secret_value() if isinstance(secret, SecretStr) else secret


def api_url(config: SiteConfig) -> str:
    api = config.local_api
    if api.unix_socket:
        return f"unix:{api.unix_socket}"
    host = "127.0.0.1" if api.host in ("0.0.0.0", "", "::") else api.host
    return f"http://{host}:{api.port}"


def _data_dir(config: SiteConfig) -> list[Check]:
    path = Path(config.site.data_dir)
    name = "data directory"
    if not path.is_dir():
        return [
            Check(
                name,
                Level.WARN,
                f"{path} does not exist yet",
                "it is created at the first start; check the disk is mounted there",
            )
        ]
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".check-") as probe:
            probe.write(b"yardlink check")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        return [
            Check(
                name,
                Level.FAIL,
                f"{path} is not writable: {exc.strerror}",
                "fix ownership or the mount (read-only after a disk error?)",
            )
        ]
    usage = shutil.disk_usage(path)
    floor = config.outbox.min_free_disk_bytes
    found = f"{path} writable, {usage.free / 1e9:.1f} GB free of {usage.total / 1e9:.1f} GB"
    if usage.free < floor * 2:
        return [Check(name, Level.FAIL, found, "free disk space: the outbox refuses records")]
    if usage.free < FREE_WARN_BYTES:
        return [Check(name, Level.WARN, found, "free disk space before the outbox fills it")]
    return [Check(name, Level.OK, found)]


def _models(config: SiteConfig) -> list[Check]:
    models_dir = Path(config.models_dir)
    problems = []
    for model in MODEL_FILES:
        try:
            verify(models_dir / model.name, model.sha256)
        except ModelFileError as exc:
            problems.append(str(exc))
    if problems:
        return [
            Check(
                "models",
                Level.FAIL,
                "; ".join(problems),
                "reinstall the bundle's models (make models) into "
                f"{models_dir}; never copy a model by hand",
            )
        ]
    return [Check("models", Level.OK, f"{len(MODEL_FILES)} files in {models_dir} match sha256")]


def _clock(now: float, server_time: float | None) -> Check:
    if now < CLOCK_FLOOR:
        return Check(
            "clock",
            Level.FAIL,
            f"local clock reads {time.strftime('%Y-%m-%d', time.gmtime(now))}: never set",
            "set the time and enable NTP (timedatectl set-ntp true)",
        )
    if server_time is None:
        return Check("clock", Level.OK, "plausible (the cloud gave no time to compare)")
    skew = now - server_time
    level = Level.OK
    if abs(skew) > SKEW_FAIL_S:
        level = Level.FAIL
    elif abs(skew) > SKEW_WARN_S:
        level = Level.WARN
    return Check(
        "clock",
        level,
        f"{skew:+.1f} s from the cloud's",
        "enable NTP (timedatectl set-ntp true); event times come from this clock",
    )


async def _local_api(config: SiteConfig) -> Check:
    url = api_url(config)
    token = secret_value(config.local_api.technician_token)
    try:
        async with ApplianceClient(url, token) as client:
            status = await client.status()
    except ApplianceUnreachable as exc:
        return Check(
            "local API",
            Level.FAIL,
            str(exc),
            "is the daemon running? systemctl status 'yardlink@*'; journalctl -u 'yardlink@*'",
        )
    except ApplianceRefused as exc:
        return Check(
            "local API",
            Level.FAIL,
            f"{url} refused: {exc}",
            "the token in the config is not the daemon's: restart it after a token change",
        )
    device = status.get("device_id") if isinstance(status, dict) else None
    return Check("local API", Level.OK, f"{url} answers (device {device})")


async def _cloud(config: SiteConfig) -> tuple[Check, float | None]:
    sync = config.sync
    token = secret_value(sync.token)
    if sync.cloud_url is None or not token:
        return (
            Check(
                "cloud",
                Level.WARN,
                "no cloud configured (sync.cloud_url / sync.token): everything stays on site",
                "set sync.cloud_url and sync.token from the provisioning sheet",
            ),
            None,
        )
    client = CloudClient(str(sync.cloud_url), token, request_timeout_s=15.0, connect_timeout_s=10.0)
    request = SyncRequest(device_id=config.site.device_id, site_id=config.site.site_id)
    try:
        answer = await client.handshake(request)
    except CloudRejected as exc:
        return (
            Check(
                "cloud",
                Level.FAIL,
                f"{sync.cloud_url} refused the handshake: {exc}",
                "the device credentials are not accepted: re-provision this device",
            ),
            None,
        )
    except SyncError as exc:
        return (
            Check(
                "cloud",
                Level.FAIL,
                f"{sync.cloud_url} unreachable: {error_summary(exc)}",
                "check the uplink, DNS and firewall (outbound HTTPS); data waits in the outbox",
            ),
            None,
        )
    finally:
        await client.close()
    return Check("cloud", Level.OK, f"{sync.cloud_url} accepted a handshake"), answer.server_time


async def _outbox(config: SiteConfig, daemon_up: bool) -> Check:
    path = Path(config.outbox.path)
    if daemon_up:
        return Check("outbox", Level.OK, f"{path} in use by the running daemon")
    if not await asyncio.to_thread(path.exists):
        return Check("outbox", Level.WARN, f"{path} does not exist yet", "created at first start")
    try:
        outbox = await asyncio.to_thread(Outbox.open, path, config.outbox)
        await outbox.close()
    except (SyncError, OSError) as exc:
        return Check(
            "outbox",
            Level.FAIL,
            f"{path} cannot be opened: {error_summary(exc)}",
            "is another process holding it? else export a support bundle for support",
        )
    return Check("outbox", Level.OK, f"{path} opens")


async def run_checks(
    config_path: str | Path, *, clock: Callable[[], float] = time.time
) -> list[Check]:
    try:
        config = load_config(config_path)
    except ApplianceError as exc:
        return [Check("config", Level.FAIL, str(exc), "fix the file; every problem is listed")]
    checks = [Check("config", Level.OK, f"{config_path} valid (device {config.site.device_id})")]
    checks += await asyncio.to_thread(_data_dir, config)
    checks += await asyncio.to_thread(_models, config)
    api = await _local_api(config)
    cloud, server_time = await _cloud(config)
    checks += [_clock(clock(), server_time), api, cloud]
    checks.append(await _outbox(config, daemon_up=api.level is Level.OK))
    return checks
