"""Benchmark of the cloud side of a model update (issue 17): the real ingest service.

    python -m bench.ota_rollout [--quick]

A release of the pinned PP-OCRv4 files (built and signed with the release tooling)
is published to a real ingest service on loopback (``POST /v1/admin/models``) and
rolled out.  Rows:

- publish-to-downloaded: from the publish request to a device holding the verified
  artifact, through the link emulator (2 Mbit/s, 150 ms RTT; ``--quick``: 8 Mbit/s):
  rollout start, the device's handshake, the manifest and the artifact (with the
  appliance's own fetcher), against the link-limited time (artifact bits / link
  rate); goal <= 1.2x.  The appliance's own stage/validate/switch time is
  ``bench.ota``'s.
- abort propagation: devices handshake every interval (staggered); canary devices
  report failures; from the abort (the handshake that crossed the threshold) to the
  device running the release being told to go back, against the handshake
  interval; goal <= 1x.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from appliance.updates.download import HttpFetcher, fetch_manifest
from appliance.updates.package import build_release, sign_release
from bench._common import Row, command_for, parse_args, row, write_results
from cloud_ingest.app import build_app
from cloud_ingest.app_keys import CATALOG
from cloud_ingest.provisioning import add_device, add_operator
from cloud_ingest.settings import IngestSettings
from sync.linkemu import LinkConditions, LinkEmulator
from sync.protocol import ModelInfo, ModelOutcome, SyncRequest, SyncResponse
from sync.protocol.releases import RolloutPlan
from sync.shared.signing import Envelope, Keyring, SigningKey

NAME = "ota_rollout"
REPO = Path(__file__).resolve().parents[1]
VERSION = "bench-rollout-rc1"
CANARY = "wh-nyc-01"


async def _handshake(
    session: aiohttp.ClientSession, base: str, device: dict[str, Any]
) -> SyncResponse:
    request = SyncRequest(
        device_id=device["id"],
        site_id=device["site"],
        models=[
            ModelInfo(
                name="rec",
                version=VERSION if device["counter"] else "pinned",
                task="gate_ocr",
                release="gate-ocr" if device["counter"] else None,
                counter=device["counter"],
                outcome=device["outcome"],
            )
        ],
    )
    headers = {"Authorization": f"Bearer {device['token']}"}
    async with session.post(
        f"{base}/v1/sync", json=request.model_dump(mode="json"), headers=headers
    ) as response:
        response.raise_for_status()
        return SyncResponse.model_validate(await response.json())


async def publish_and_start(
    session: aiohttp.ClientSession, base: str, operator: str, release: SignedRelease
) -> None:
    """Publish ``release`` through the admin API and start its rollout, as an operator."""
    headers = {"Authorization": f"Bearer {operator}"}
    form = aiohttp.FormData()
    form.add_field("manifest", io.BytesIO(release.manifest), filename="m.json")
    form.add_field("artifact", release.archive.open("rb"), filename="release.tar")
    async with session.post(f"{base}/v1/admin/models", data=form, headers=headers) as r:
        r.raise_for_status()
    rollout = f"{base}/v1/admin/models/gate-ocr/{release.version}/rollout"
    async with session.post(rollout, json={"action": "start"}, headers=headers) as r:
        r.raise_for_status()


async def _publish_to_downloaded(
    base: str, operator: str, device: dict[str, Any], release: SignedRelease, rate: float
) -> tuple[float, float]:
    """Seconds from publish to the device holding the verified artifact; link-limited s."""
    manifest = release.manifest
    signed = Envelope.parse(manifest).signed
    async with LinkEmulator(_host_port(base), LinkConditions(rtt_s=0.150, rate_bps=rate)) as link:
        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            await publish_and_start(session, base, operator, release)
            answer = await _handshake(session, link.url, device)
        (assignment,) = answer.models
        fetcher = HttpFetcher(link.url, device["token"])
        digest, size = hashlib.sha256(), 0
        manifest_url = assignment.manifest_url
        assert await fetch_manifest(fetcher, manifest_url) == manifest
        async for _, piece in fetcher.stream(manifest_url.replace("/manifest", "/artifact"), 0):
            digest.update(piece)
            size += len(piece)
        elapsed = time.monotonic() - started
    assert digest.hexdigest() == signed["artifact"]["sha256"], "artifact differs"
    return elapsed, size * 8 / rate


async def _abort_propagation(
    base: str, devices: list[dict[str, Any]], interval: float
) -> dict[str, float]:
    """When (wall clock) each device running the release was told to go back."""
    told: dict[str, float] = {}
    stop = asyncio.Event()

    async def run(device: dict[str, Any], offset: float) -> None:
        await asyncio.sleep(offset)
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                answer = await _handshake(session, base, device)
                for a in answer.models:
                    if a.action == "rollback" and device["counter"] == a.counter:
                        told[device["id"]] = time.time()
                        device["counter"] = None
                    elif a.action == "install":
                        device["outcome"] = ModelOutcome(
                            name="gate-ocr",
                            version=a.version,
                            counter=a.counter or 0,
                            result="activated" if device["takes"] else "validation_failed",
                            check=None if device["takes"] else "golden",
                        )
                        if device["takes"]:
                            device["counter"] = a.counter
                if told and all(not d["counter"] for d in devices if d["takes"]):
                    stop.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)

    tasks = [
        asyncio.create_task(run(d, interval * i / len(devices))) for i, d in enumerate(devices)
    ]
    try:
        await asyncio.wait_for(stop.wait(), 60 * interval)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    return told


def _host_port(base: str) -> tuple[str, int]:
    host, port = base.removeprefix("http://").split(":")
    return host, int(port)


@dataclass
class _Cloud:
    base: str
    catalog: Any
    operator: str
    devices: list[dict[str, Any]]
    release: SignedRelease


@dataclass(frozen=True)
class SignedRelease:
    """A fresh release key's keyring file, and the pinned OCR files as a signed release."""

    keyring: Path
    archive: Path
    manifest: bytes
    version: str


def signed_release(work: Path, plan: RolloutPlan, version: str = VERSION) -> SignedRelease:
    """Sign a one-key keyring and a release of the pinned OCR files under ``work``."""
    key = SigningKey.generate()
    keyring = Keyring(version=1, keys={key.public.keyid: key.public}, issued_at=1_700_000_000)
    keyring_file = work / "keyring.json"
    keyring_file.write_bytes(Envelope.sign(keyring.signed_document(), [key]).to_bytes())
    build = build_release(
        REPO / "models",
        name="gate-ocr",
        version=version,
        task="gate_ocr",
        device_classes=["x86-cpu"],
        out=work / "release.tar",
        golden_frames=1,
    )
    _, manifest = sign_release(
        build.archive,
        [key],
        counter=2,
        issued_at=int(time.time()),
        expires_in_s=86_400,
        rollout=plan,
    )
    return SignedRelease(keyring_file, build.archive, manifest, version)


@contextlib.asynccontextmanager
async def _cloud(work: Path) -> AsyncIterator[_Cloud]:
    """A real ingest service on loopback trusting a fresh key, a signed release of the
    pinned OCR files, an operator and six devices at three sites (one canary taker)."""
    plan = RolloutPlan(canary_sites=[CANARY], stages=[100], min_devices=3, bake_s=3600)
    release = signed_release(work, plan)
    settings = IngestSettings(data_dir=work / "data", release_keyring_file=release.keyring)
    app = build_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        catalog = app[CATALOG]
        operator = (await add_operator(catalog, "bench", actor="bench", now=time.time())).token
        devices = []
        for i, (site_id, takes) in enumerate(
            [
                (CANARY, True),
                (CANARY, False),
                (CANARY, False),
                ("yard-b", False),
                ("yard-b", False),
                ("yard-c", False),
            ]
        ):
            device_id = f"{site_id}-gw{i}"
            created = await add_device(catalog, device_id, site_id, actor="bench", now=time.time())
            devices.append(
                {
                    "id": device_id,
                    "site": site_id,
                    "token": created.token,
                    "counter": None,
                    "outcome": None,
                    "takes": takes,
                }
            )
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        yield _Cloud(base, catalog, operator, devices, release)
    finally:
        await runner.cleanup()


async def _abort_row(cloud: _Cloud, quick: bool, command: str) -> Row:
    """Devices handshake every interval (staggered); the canary taker runs the release,
    the other canaries fail it: from the abort to the taker told to go back."""
    interval = 1.0 if quick else 2.0
    taker = cloud.devices[0]
    taker["counter"] = 2
    taker["outcome"] = ModelOutcome(name="gate-ocr", version=VERSION, counter=2, result="activated")
    told = await _abort_propagation(cloud.base, cloud.devices, interval)
    events = await cloud.catalog.list_audit(after_id=0, limit=1000)
    (abort,) = [e for e in events if e.action == "rollout.abort"]
    last_told = max(told.values()) - abort.at
    return row(
        "abort propagation: threshold crossed to the taker told to go back",
        last_told,
        "s",
        anchor="handshake interval",
        anchor_value=interval,
        goal="<= 1x",
        command=command,
        met=last_told <= interval,
    )


async def abort_propagation_row(quick: bool, command: str) -> Row:
    """The abort-propagation row alone (``bench.ota`` reports it with its own rows)."""
    with tempfile.TemporaryDirectory(prefix="bench-ota-abort-") as tmp:
        async with _cloud(Path(tmp)) as cloud:
            async with aiohttp.ClientSession() as session:
                await publish_and_start(session, cloud.base, cloud.operator, cloud.release)
            return await _abort_row(cloud, quick, command)


async def run(quick: bool) -> list[Row]:
    command = command_for(NAME, quick)
    rate = 8_000_000.0 if quick else 2_000_000.0
    with tempfile.TemporaryDirectory(prefix="bench-ota-rollout-") as tmp:
        async with _cloud(Path(tmp)) as cloud:
            elapsed, link_limited = await _publish_to_downloaded(
                cloud.base, cloud.operator, cloud.devices[0], cloud.release, rate
            )
            abort = await _abort_row(cloud, quick, command)
            size_mb = cloud.release.archive.stat().st_size / 1e6
    return [
        row(
            f"publish-to-downloaded, {size_mb:.1f} MB release, {rate / 1e6:g} Mbit/s 150 ms",
            elapsed,
            "s",
            anchor="artifact bits / link rate",
            anchor_value=round(link_limited, 3),
            goal="<= 1.2x",
            command=command,
            met=elapsed <= 1.2 * link_limited,
        ),
        abort,
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(NAME, argv)
    rows = asyncio.run(run(args.quick))
    write_results(NAME, rows, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
