"""The local API routes of model updates: authenticated, typed errors, refusals named."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from appliance.daemon import Daemon
from sync.shared.signing import Envelope, KeyRevoked, Keyring, SigningKey
from tests.appliance.daemon_harness import TOKEN
from tests.appliance.updates.updates_daemon_harness import updates_config
from tests.support.releases import ReleaseKit

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def daemon(release_kit: ReleaseKit, tmp_path: Path) -> AsyncIterator[Daemon]:
    running = Daemon(updates_config(tmp_path, release_kit, device_class="coral-v2"))
    await running.start()
    yield running
    await running.stop()


async def test_routes(daemon: Daemon, release_kit: ReleaseKit, tmp_path: Path):
    base = daemon.api_url
    manifest = tmp_path / "m.json"
    manifest.write_bytes(release_kit.sign(counter=2))
    install = {"archive": str(release_kit.build.archive), "manifest": str(manifest)}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/v1/models") as response:
            assert response.status == 401
        async with session.get(f"{base}/v1/models", headers=AUTH) as response:
            body = await response.json()
            assert body["gate_ocr"]["serving"] == "pinned"
            assert body["gate_ocr"]["slots"]["a"]["status"] == "empty"
        async with session.post(f"{base}/v1/models/gate_ocr/rollback", headers=AUTH) as response:
            assert response.status == 409
            assert (await response.json())["error"] == "nothing_to_roll_back"
        async with session.post(
            f"{base}/v1/models/gate_ocr/rollback", headers=AUTH, json={"reason": 5}
        ) as response:
            assert response.status == 400
        async with session.post(
            f"{base}/v1/models/install", headers=AUTH, data=b"{not json"
        ) as response:
            assert response.status == 400
        async with session.post(
            f"{base}/v1/models/install", headers=AUTH, json={**install, "manifest": "/nope"}
        ) as response:
            assert response.status == 400 and "cannot read" in (await response.json())["detail"]
        # This appliance is a coral-v2: the x86 release is refused, and the check named.
        async with session.post(
            f"{base}/v1/models/install", headers=AUTH, json=install
        ) as response:
            assert response.status == 422
            body = await response.json()
            assert (body["error"], body["check"]) == ("refused", "device_class")


async def test_keyring_rotation_over_the_api_persists(
    daemon: Daemon, release_kit: ReleaseKit, tmp_path: Path
):
    assert daemon.updates is not None
    old_key, new_key = release_kit.key, SigningKey.generate()
    nxt = Keyring(
        version=2,
        keys={new_key.public.keyid: new_key.public},
        revoked=frozenset({old_key.public.keyid}),
        issued_at=release_kit.issued_at,
    )
    url = f"{daemon.api_url}/v1/models/keyring"
    async with aiohttp.ClientSession() as session:
        only_new = Envelope.sign(nxt.signed_document(), [new_key]).to_bytes()
        async with session.post(url, headers=AUTH, data=only_new) as response:
            assert response.status == 422
            assert (await response.json())["check"] == "untrusted_key"
        both = Envelope.sign(nxt.signed_document(), [old_key, new_key]).to_bytes()
        async with session.post(url, headers=AUTH, data=both) as response:
            assert response.status == 200, await response.text()
            assert (await response.json())["revoked"] == [old_key.public.keyid]
    # Releases signed by the revoked key are refused from now on, and after a restart.
    with pytest.raises(KeyRevoked):
        await daemon.updates.agent.precheck(release_kit.sign(counter=3))
    await daemon.stop()
    again = Daemon(daemon.config)
    await again.start()
    try:
        assert again.updates is not None and again.updates.agent.keyring.version == 2
        with pytest.raises(KeyRevoked):
            await again.updates.agent.precheck(release_kit.sign(counter=3))
    finally:
        await again.stop()
