"""A frame as it enters the appliance, and the checks that turn bad input into ``BadFrame``.

Every source (HTTP push, spool directory, synthetic camera) produces a
:class:`Frame`; :func:`decode_frame` validates the bytes before anything is
queued, so a corrupt JPEG is refused at the door with a clear message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from appliance.errors import BadFrame, FrameTooLarge, UnsupportedFrameType
from appliance.sources.frame_metadata import MetadataValue

__all__ = [
    "ACCEPTED_CONTENT_TYPES",
    "Frame",
    "Reduction",
    "decode_frame",
    "jpeg_size",
    "sniff_content_type",
]

ACCEPTED_CONTENT_TYPES = ("image/jpeg", "image/png")
_MAX_PIXELS = 40_000_000


_JPEG_FLAGS = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}

Reduction = Callable[[int, int], int]
"""``(width, height) -> 1, 2, 4 or 8``: how many times smaller a JPEG may be decoded."""


@dataclass(slots=True)
class Frame:
    """One decoded camera frame.  ``received_at`` is monotonic (latency); ``event_time`` is UTC.

    ``pixels`` is the frame as decoded at the door: full size, or, when the
    tasks said a smaller image would do (``decode_frame(reduction=...)``), a
    JPEG decoded ``reduced_by`` times smaller in the DCT domain, which is
    cheaper.  ``image_bgr`` is always full size: decoded from ``encoded`` on
    first use (once, from any thread) when ``pixels`` is reduced.
    """

    camera_id: str
    encoded: bytes
    content_type: str
    pixels: np.ndarray[Any, Any]
    event_time: float = field(default_factory=time.time)
    received_at: float = field(default_factory=time.monotonic)
    metadata: dict[str, MetadataValue] = field(default_factory=dict)  # X-Frame-Metadata
    source: str = "http"
    spool_path: str | None = None
    reduced_by: int = 1
    _full: np.ndarray[Any, Any] | None = field(default=None, repr=False, compare=False)
    _full_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def image_bgr(self) -> np.ndarray[Any, Any]:
        """The frame at full size (decoded here, once, if ``pixels`` is reduced)."""
        if self.reduced_by == 1:
            return self.pixels
        with self._full_lock:
            if self._full is None:
                image = cv2.imdecode(np.frombuffer(self.encoded, np.uint8), cv2.IMREAD_COLOR)
                if image is None:
                    raise BadFrame(f"corrupt {self.content_type}: the image cannot be decoded")
                self._full = image
            return self._full


def sniff_content_type(data: bytes) -> str | None:
    """The image type from magic bytes, or None when it is neither JPEG nor PNG."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    return None


def decode_frame(
    camera_id: str,
    data: bytes,
    content_type: str | None,
    *,
    max_bytes: int,
    metadata: dict[str, MetadataValue] | None = None,
    source: str = "http",
    reduction: Reduction | None = None,
) -> Frame:
    """Check and decode ``data``; raise ``BadFrame`` saying exactly what is wrong.

    The frame's latency clock starts here, before decoding: decoding is part of
    the work between receipt and a durable result.  ``reduction`` (the
    ``FrameProcessor``'s ``jpeg_reduction``) lets a JPEG be decoded 2, 4 or 8
    times smaller when every task can work from that (for 1280x720 and the face
    task alone: 1/2, ~5.0 ms instead of ~6.3 ms plus the halving the task would
    do); the whole stream is still decoded, so a corrupt one is refused alike.
    """
    received_at = time.monotonic()
    if not data:
        raise BadFrame("empty frame: the body has zero bytes")
    if len(data) > max_bytes:
        raise FrameTooLarge(f"frame too large: {len(data)} bytes, limit {max_bytes}")
    declared = (content_type or "").split(";")[0].strip().lower() or None
    if declared is not None and declared not in ACCEPTED_CONTENT_TYPES:
        raise UnsupportedFrameType(
            f"unsupported content type {declared!r}: send image/jpeg or image/png"
        )
    sniffed = sniff_content_type(data)
    if sniffed is None:
        raise BadFrame("not a JPEG or PNG image (unrecognised leading bytes)")
    if declared is not None and declared != sniffed:
        raise UnsupportedFrameType(f"content type says {declared} but the bytes are {sniffed}")
    size = jpeg_size(data) if sniffed == "image/jpeg" else None
    if size is not None and (size[0] * size[1] > _MAX_PIXELS or min(size) < 16):
        raise BadFrame(f"image size {size[0]}x{size[1]} is out of bounds")
    reduced_by = 1 if size is None or reduction is None else reduction(*size)
    flag = _JPEG_FLAGS.get(reduced_by)
    if flag is None:
        raise ValueError(f"a JPEG decodes 1, 2, 4 or 8 times smaller, not {reduced_by}")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
    if image is None or image.ndim != 3 or image.shape[2] != 3:
        raise BadFrame(f"corrupt {sniffed}: the image cannot be decoded")
    height, width = image.shape[:2]
    if size is None and (height * width > _MAX_PIXELS or height < 16 or width < 16):
        raise BadFrame(f"image size {width}x{height} is out of bounds")
    return Frame(
        camera_id=camera_id,
        encoded=data,
        content_type=sniffed,
        pixels=image,
        received_at=received_at,
        metadata=dict(metadata or {}),
        source=source,
        reduced_by=reduced_by,
    )


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # not DHT, JPG, DAC


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a JPEG's frame header, or None if none is found."""
    at = 2
    while at + 9 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            at += 2
            continue
        if marker in _SOF_MARKERS:
            height = int.from_bytes(data[at + 5 : at + 7], "big")
            width = int.from_bytes(data[at + 7 : at + 9], "big")
            return (width, height) if width and height else None
        if marker == 0xDA:  # scan data before any frame header
            return None
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return None
