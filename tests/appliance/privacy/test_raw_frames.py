"""Raw on demand: a kept original is blurred when the cloud asks for it, never sent as is."""

from __future__ import annotations

import hashlib
import resource
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.privacy.blobstore import BlobStore, BlobWriteFailed, utc_day
from appliance.privacy.raw_frames import KeptFrame, RawFrames
from sync.protocol import RawRequest

FACE = (100, 80, 60, 60)  # x, y, w, h


def _frames(tmp_path: Path) -> tuple[BlobStore, RawFrames]:
    store = BlobStore(tmp_path / "blobs", tmp_path / "keys")
    return store, RawFrames(store, tmp_path / "raw-index.jsonl", tmp_path / "uploads")


def _detailed_frame() -> tuple[np.ndarray, bytes]:
    y, x = np.mgrid[0:240, 0:320]
    pattern = 128 + 100 * np.sin(x / 2.5) * np.cos(y / 3.5)  # fine detail everywhere
    image = np.repeat(pattern[:, :, None], 3, axis=2).astype(np.uint8)
    ok, encoded = cv2.imencode(".png", image)  # lossless, so the test sees real detail
    assert ok
    return image, encoded.tobytes()


def _request(seq: int | None = None, **window: float) -> RawRequest:
    return RawRequest(request_id="rr-1", seq=seq, **window)


async def test_a_kept_frame_is_blurred_on_request_and_survives_restart(tmp_path: Path) -> None:
    store, frames = _frames(tmp_path)
    image, original = _detailed_frame()
    now = time.time()
    stored = store.put(original, now)
    frames.keep(KeptFrame((11, 12), stored.sha256, now, "gate-in", (FACE,), True))

    refs = await frames.resolve_raw_request(_request(12))  # any seq of the frame
    assert len(refs) == 1 and refs[0].sha256 != stored.sha256
    assert refs[0].meta["kind"] == "frame_blurred" and refs[0].meta["seq"] == "11"
    upload = await frames.open_for_upload(refs[0])
    data = upload.read_bytes()
    assert hashlib.sha256(data).hexdigest() == refs[0].sha256
    sent = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    x, y, w, h = FACE
    face_before = image[y : y + h, x : x + w].astype(float)
    face_after = sent[y : y + h, x : x + w].astype(float)
    assert face_after.std() < face_before.std() / 3  # the face region lost its detail
    corner = np.abs(sent[:40, 250:].astype(float) - image[:40, 250:].astype(float)).mean()
    assert corner < 20  # elsewhere the frame is still the frame (JPEG noise only)

    again = await frames.resolve_raw_request(_request(11))
    assert again == refs  # blurred once, then served from the index
    _, reopened = _frames(tmp_path)
    assert await reopened.resolve_raw_request(_request(12)) == refs
    assert await reopened.resolve_raw_request(_request(since=now - 1, until=now + 1)) == refs


async def test_unknown_or_shredded_frames_resolve_to_nothing(tmp_path: Path) -> None:
    store, frames = _frames(tmp_path)
    _, original = _detailed_frame()
    now = time.time()
    stored = store.put(original, now)
    frames.keep(KeptFrame((5,), stored.sha256, now, "gate-in", (), True))
    assert await frames.resolve_raw_request(_request(99)) == []
    store.shred_day(utc_day(now))
    assert await frames.resolve_raw_request(_request(5)) == []


def test_a_torn_last_index_line_is_skipped(tmp_path: Path) -> None:
    store, frames = _frames(tmp_path)
    frames.keep(KeptFrame((1,), "ab" * 32, time.time(), "gate-in", (), True))
    with (tmp_path / "kept-frames.jsonl").open("a") as handle:
        handle.write('{"seqs": [2], "original_sha')  # a crash mid-line
    _, reopened = _frames(tmp_path)
    assert reopened._kept.keys() == {1}


async def test_the_first_row_after_a_torn_line_survives_the_next_restart(tmp_path: Path) -> None:
    """kill -9 mid-append tears the last line; the row appended after the restart must not be
    glued to it (one unreadable line, that frame no longer requestable)."""
    store, frames = _frames(tmp_path)
    _, original = _detailed_frame()
    now = time.time()
    stored = store.put(original, now)
    frames.keep(KeptFrame((1,), stored.sha256, now, "gate-in", (), True))
    for name in ("kept-frames.jsonl", "raw-index.jsonl"):
        with (tmp_path / name).open("a") as handle:
            handle.write('{"seqs": [2], "original_sha')  # the crash
    _, restarted = _frames(tmp_path)
    restarted.keep(KeptFrame((3,), stored.sha256, now, "gate-in", (FACE,), True))
    refs = await restarted.resolve_raw_request(_request(3))  # blurred and indexed
    assert len(refs) == 1
    _, again = _frames(tmp_path)
    assert again._kept.keys() == {1, 3}
    assert await again.resolve_raw_request(_request(3)) == refs


async def test_an_incomplete_kept_frame_is_redacted_again_or_not_sent(tmp_path: Path) -> None:
    """Indexed before gate_ocr had run (a crash in between): its boxes are found again on
    request; with nothing to find them, it is answered unavailable, never sent as is."""
    store = BlobStore(tmp_path / "blobs", tmp_path / "keys")
    image, original = _detailed_frame()
    now = time.time()
    stored = store.put(original, now)
    plate = (200, 150, 80, 30)
    blind = RawFrames(store, tmp_path / "raw-index.jsonl", tmp_path / "uploads")
    blind.keep(KeptFrame((7, 8), stored.sha256, now, "gate-in", (FACE,), False))
    assert await blind.resolve_raw_request(_request(7)) == []

    seen: list[tuple[int, ...]] = []

    def detect(frame: np.ndarray) -> tuple[tuple[int, int, int, int], ...]:
        seen.append(frame.shape)
        return (FACE, plate)

    frames = RawFrames(store, tmp_path / "raw-index.jsonl", tmp_path / "uploads", detect=detect)
    refs = await frames.resolve_raw_request(_request(8))
    assert len(refs) == 1 and seen == [image.shape]
    sent_path = await frames.open_for_upload(refs[0])
    sent = cv2.imdecode(np.frombuffer(sent_path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    for x, y, w, h in (FACE, plate):  # both the face and the plate lost their detail
        before = image[y : y + h, x : x + w].astype(float)
        assert sent[y : y + h, x : x + w].astype(float).std() < before.std() / 3


def test_an_index_append_on_a_full_disk_is_retryable_and_tears_nothing(tmp_path: Path) -> None:
    """The file size cap stands in for a full disk: the row is written only in part."""
    _, frames = _frames(tmp_path)
    frames.keep(KeptFrame((1,), "ab" * 32, time.time(), "gate-in", (), True))
    index = tmp_path / "kept-frames.jsonl"
    before = index.read_bytes()
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 10, hard))
    try:
        with pytest.raises(BlobWriteFailed, match="kept-frames.jsonl") as caught:
            frames.keep(KeptFrame((2,), "cd" * 32, time.time(), "gate-in", (), True))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert caught.value.retryable
    assert index.read_bytes() == before  # the part written is cut back off


async def test_upload_copies_are_deleted_on_release_and_swept_after_a_crash(
    tmp_path: Path,
) -> None:
    store, frames = _frames(tmp_path)
    now = time.time()
    _, original = _detailed_frame()
    stored = store.put(original, now)
    frames.keep(KeptFrame((3,), stored.sha256, now, "gate-in", (FACE,), True))
    [ref] = await frames.resolve_raw_request(_request(3))
    uploads = tmp_path / "uploads"
    first, second = await frames.open_for_upload(ref), await frames.open_for_upload(ref)
    assert first != second and first.read_bytes() == second.read_bytes()
    await frames.release_upload(first)
    assert sorted(uploads.iterdir()) == [second]

    elsewhere = tmp_path / "blobs-keep.jpg"  # not a copy it made: never deleted
    elsewhere.write_bytes(b"x")
    await frames.release_upload(elsewhere)
    assert elsewhere.exists()

    # A kill -9 mid-upload leaves `second` behind: the next start sweeps it.
    RawFrames(store, tmp_path / "raw-index.jsonl", uploads)
    assert list(uploads.iterdir()) == []
