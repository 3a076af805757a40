"""decode_frame: the door check, and the JPEG decoded smaller when the tasks say it will do."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from appliance.errors import BadFrame
from appliance.sources.frames import Reduction, decode_frame, jpeg_size


def _jpeg(width: int, height: int, **params: int) -> bytes:
    rng = np.random.default_rng(width * height)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    flags = [v for pair in params.items() for v in (getattr(cv2, pair[0]), pair[1])]
    ok, encoded = cv2.imencode(".jpg", cv2.GaussianBlur(image, (9, 9), 3), flags)
    assert ok
    return encoded.tobytes()


@pytest.mark.parametrize("size", [(1280, 720), (641, 17), (16, 4000)])
def test_jpeg_size_reads_the_frame_header(size: tuple[int, int]) -> None:
    assert jpeg_size(_jpeg(*size)) == size


def test_jpeg_size_of_a_progressive_jpeg_and_of_no_header() -> None:
    assert jpeg_size(_jpeg(320, 200, IMWRITE_JPEG_PROGRESSIVE=1)) == (320, 200)
    assert jpeg_size(b"\xff\xd8\xff\xe0\x00\x10JFIF") is None
    assert jpeg_size(b"\xff\xd8garbage" * 4) is None


def test_without_a_reduction_the_frame_is_decoded_whole() -> None:
    data = _jpeg(640, 360)
    frame = decode_frame("cam", data, "image/jpeg", max_bytes=1 << 20)
    assert frame.reduced_by == 1
    assert frame.pixels.shape == (360, 640, 3)
    assert frame.image_bgr is frame.pixels


def test_a_reduced_decode_keeps_the_full_frame_a_decode_away() -> None:
    data = _jpeg(1280, 720)
    asked: list[tuple[int, int]] = []

    def reduction(width: int, height: int) -> int:
        asked.append((width, height))
        return 2

    frame = decode_frame("cam", data, "image/jpeg", max_bytes=1 << 20, reduction=reduction)
    assert asked == [(1280, 720)]
    assert frame.reduced_by == 2
    assert frame.pixels.shape == (360, 640, 3)
    full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    # the reduced decode is the frame shrunk (DCT domain): close to a box average
    box = cv2.resize(full, (640, 360), interpolation=cv2.INTER_AREA)
    assert float(np.abs(frame.pixels.astype(int) - box).mean()) < 3.0
    # full size on demand, decoded once even when asked from several threads at once
    seen: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: seen.append(frame.image_bgr)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(image is seen[0] for image in seen)
    assert np.array_equal(seen[0], full)


def test_a_reduction_is_not_asked_for_png_and_a_bad_one_is_refused() -> None:
    ok, png = cv2.imencode(".png", np.zeros((40, 60, 3), np.uint8))
    frame = decode_frame(
        "cam", png.tobytes(), None, max_bytes=1 << 20, reduction=lambda w, h: 1 / 0
    )
    assert frame.reduced_by == 1 and frame.pixels.shape == (40, 60, 3)
    with pytest.raises(ValueError, match="1, 2, 4 or 8"):
        decode_frame("cam", _jpeg(64, 64), None, max_bytes=1 << 20, reduction=lambda w, h: 3)


def _refused(data: bytes, reduction: Reduction | None) -> bool:
    try:
        decode_frame("cam", data, None, max_bytes=1 << 20, reduction=reduction)
    except BadFrame:
        return True
    return False


def test_corrupt_and_oversized_jpegs_are_refused_at_any_reduction() -> None:
    data = _jpeg(1280, 720)
    header_only = data[: data.index(b"\xff\xda")]
    garbage_sof = data[:2] + b"\xff\xc0\x00\x11\x08" + bytes(200)
    for reduction in (None, lambda w, h: 2, lambda w, h: 8):
        assert _refused(header_only, reduction)
        assert _refused(garbage_sof, reduction)
        assert not _refused(data, reduction)
    with pytest.raises(BadFrame, match="out of bounds"):
        decode_frame("cam", _jpeg(8, 720), None, max_bytes=1 << 20, reduction=lambda w, h: 2)
