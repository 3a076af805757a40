"""Publishing a real signed release, serving it with Range, and every refusal on publish."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from appliance.updates.download import HttpFetcher
from cloud_ingest.app_keys import CATALOG
from cloud_ingest.settings import IngestSettings
from sync.shared.signing import Envelope, SigningKey
from tests.support.ingest import Ingest, bearer, running_ingest
from tests.support.model_registry import Kit, publish


async def test_publish_then_serve_manifest_and_artifact(service: Ingest, kit: Kit) -> None:
    operator, device = await service.operator(), await service.device("gate-01", "wh-nyc-01")
    artifact = kit.build.archive.read_bytes()
    response = await publish(service, operator, kit.signed, artifact)
    assert response.status == 201, await response.text()
    body = await response.json()
    assert body["counter"] == 2 and body["sha256"] == kit.manifest.artifact.sha256
    assert body["keyid"] == kit.key.public.keyid and body["published_by"] == "alice"
    # content-addressed on disk
    sha = kit.manifest.artifact.sha256
    stored = service.settings.data_dir / "models" / "artifacts" / sha[:2] / sha
    assert stored.read_bytes() == artifact
    # the same manifest again is a no-op success, audited once
    again = await publish(service, operator, kit.signed, artifact)
    assert again.status == 200
    events = await service.app[CATALOG].list_audit(after_id=0, limit=100)
    publishes = [e for e in events if e.action == "model.publish"]
    assert len(publishes) == 1
    assert (
        publishes[0].actor == "alice" and publishes[0].subject == f"gate-ocr/{kit.manifest.version}"
    )

    base = f"/v1/models/gate-ocr/{kit.manifest.version}"
    manifest = await service.client.get(f"{base}/manifest", headers=bearer(device))
    assert manifest.status == 200
    assert await manifest.read() == kit.signed
    whole = await service.client.get(f"{base}/artifact", headers=bearer(device))
    assert whole.status == 200 and await whole.read() == artifact
    cut = 12_345
    tail = await service.client.get(
        f"{base}/artifact", headers={**bearer(device), "Range": f"bytes={cut}-"}
    )
    assert tail.status == 206
    assert tail.headers["Content-Range"] == f"bytes {cut}-{len(artifact) - 1}/{len(artifact)}"
    assert await tail.read() == artifact[cut:]
    past = await service.client.get(
        f"{base}/artifact", headers={**bearer(device), "Range": f"bytes={len(artifact)}-"}
    )
    assert past.status == 416
    missing = await service.client.get("/v1/models/gate-ocr/nope/manifest", headers=bearer(device))
    assert missing.status == 404
    anonymous = await service.client.get(f"{base}/artifact")
    assert anonymous.status == 401


async def test_a_download_cut_midway_resumes_where_it_stopped(service: Ingest, kit: Kit) -> None:
    """Real HTTP on loopback with the appliance's own fetcher: the connection is dropped
    after some bytes, the second request asks from there and gets only the rest."""
    operator, device = await service.operator(), await service.device("gate-01", "wh-nyc-01")
    artifact = kit.build.archive.read_bytes()
    assert (await publish(service, operator, kit.signed, artifact)).status == 201
    fetcher = HttpFetcher(str(service.client.make_url("")), device)
    url = f"/v1/models/gate-ocr/{kit.manifest.version}/artifact"
    received = bytearray()
    pieces = fetcher.stream(url, 0)
    async for position, piece in pieces:
        assert position == len(received)
        received += piece
        if len(received) >= 200_000:
            break  # the link is cut: the response is dropped unread
    await pieces.aclose()
    cut = len(received)
    assert 0 < cut < len(artifact)
    async for position, piece in fetcher.stream(url, cut):
        assert position == len(received)  # resumed (206 from the cut), not started over
        received += piece
    assert hashlib.sha256(received).hexdigest() == kit.manifest.artifact.sha256


def _tar_with_extra_file(original: Path) -> bytes:
    out = io.BytesIO()
    with tarfile.open(original) as source, tarfile.open(fileobj=out, mode="w") as tar:
        for member in source:
            tar.addfile(member, source.extractfile(member))
        extra = tarfile.TarInfo("model/extra.bin")
        extra.size = 4
        tar.addfile(extra, io.BytesIO(b"evil"))
    return out.getvalue()


async def test_every_refusal_on_publish(service: Ingest, kit: Kit) -> None:
    operator, device = await service.operator(), await service.device("gate-01", "wh-nyc-01")
    artifact = kit.build.archive.read_bytes()
    stranger = SigningKey.generate()

    async def refused(manifest: bytes, body: bytes, status: int, check: str) -> None:
        response = await publish(service, operator, manifest, body)
        assert response.status == status, await response.text()
        answer = await response.json()
        assert answer["detail"].startswith(f"{check}:"), answer

    unsigned = Envelope(signed=Envelope.parse(kit.signed).signed, signatures=()).to_bytes()
    await refused(unsigned, artifact, 422, "signature_missing")
    await refused(kit.resign(stranger), artifact, 422, "untrusted_key")
    await refused(kit.resign(kit.revoked_key), artifact, 422, "revoked_key")
    tampered = kit.signed.replace(b'"counter":2', b'"counter":9')
    assert tampered != kit.signed
    await refused(tampered, artifact, 422, "bad_signature")
    await refused(b"{not json", artifact, 422, "envelope")
    wrong_type = Envelope.sign(
        {**kit.manifest.signed_document(), "_type": "image-bundle"}, [kit.key]
    )
    await refused(wrong_type.to_bytes(), artifact, 422, "wrong_type")
    await refused(
        kit.resign(issued_at=1_700_000_000, expires_at=1_700_000_100), artifact, 422, "expired"
    )
    shapeless = Envelope.sign({**kit.manifest.signed_document(), "files": []}, [kit.key])
    await refused(shapeless.to_bytes(), artifact, 422, "envelope")
    # the artifact against the signed length and hash
    await refused(kit.signed, artifact + b"\0" * 10, 413, "too_long")
    await refused(kit.signed, artifact[:-10], 422, "size")
    flipped = bytearray(artifact)
    flipped[-1] ^= 1
    await refused(kit.signed, bytes(flipped), 422, "sha256")
    # a tar whose own digest is signed but whose files are not the signed list
    extra = _tar_with_extra_file(kit.build.archive)
    extra_manifest = kit.resign(
        artifact={"sha256": hashlib.sha256(extra).hexdigest(), "size": len(extra)}
    )
    await refused(extra_manifest, extra, 422, "files")
    # nothing was stored by any refusal
    models = service.settings.data_dir / "models"
    assert not list((models / "artifacts").rglob("*")) if (models / "artifacts").exists() else True
    assert not list((models / "incoming").iterdir())

    # counter: above every published release of the name, unless a signed rollback
    assert (await publish(service, operator, kit.resign(counter=5), artifact)).status == 201
    await refused(kit.resign(version="older-rc", counter=4), artifact, 409, "counter_not_above")
    rollback = kit.resign(version="rollback-rc", counter=4, rollback=True)
    assert (await publish(service, operator, rollback, artifact)).status == 201
    # the same name and version with another manifest
    await refused(kit.resign(counter=6), artifact, 409, "conflict")

    # wrong caller, wrong body
    form_as_device = await publish(service, device, kit.signed, artifact)
    assert form_as_device.status == 403
    not_multipart = await service.client.post(
        "/v1/admin/models", data=kit.signed, headers=bearer(operator)
    )
    assert not_multipart.status == 400
    events = await service.app[CATALOG].list_audit(after_id=0, limit=100)
    assert [e.action for e in events].count("model.publish") == 2


async def test_no_trusted_keys_means_no_publishing(tmp_path: Path, kit: Kit) -> None:
    settings = IngestSettings(data_dir=tmp_path / "data", sweep_interval_s=3600)
    async with running_ingest(settings) as service:
        operator = await service.operator()
        response = await publish(service, operator, kit.signed, kit.build.archive.read_bytes())
        assert response.status == 422
        assert (await response.json())["detail"].startswith("untrusted_key:")


@pytest.mark.parametrize("garbage", [b"", b"{}", b'{"signed": 1, "signatures": []}'])
async def test_a_manifest_that_is_not_an_envelope_is_refused(
    service: Ingest, kit: Kit, garbage: bytes
) -> None:
    operator = await service.operator()
    response = await publish(service, operator, garbage, b"x")
    assert response.status == 422
    assert (await response.json())["detail"].startswith("envelope:")
