"""A frame as it enters the appliance, and the checks that turn bad input into ``BadFrame``.

Every source (HTTP push, spool directory, synthetic camera) produces a
:class:`Frame`; :func:`decode_frame` validates the bytes before anything is
queued, so a corrupt JPEG is refused at the door with a clear message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from appliance.errors import BadFrame

__all__ = ["ACCEPTED_CONTENT_TYPES", "Frame", "decode_frame", "sniff_content_type"]

ACCEPTED_CONTENT_TYPES = ("image/jpeg", "image/png")
_MAX_PIXELS = 40_000_000


@dataclass(slots=True)
class Frame:
    """One decoded camera frame.  ``received_at`` is monotonic (latency); ``event_time`` is UTC."""

    camera_id: str
    encoded: bytes
    content_type: str
    image_bgr: np.ndarray[Any, Any]
    event_time: float = field(default_factory=time.time)
    received_at: float = field(default_factory=time.monotonic)
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = "http"
    spool_path: str | None = None


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
    metadata: dict[str, Any] | None = None,
    source: str = "http",
) -> Frame:
    """Check and decode ``data``; raise ``BadFrame`` saying exactly what is wrong.

    The frame's latency clock starts here, before decoding: decoding is part of
    the work between receipt and a durable result.
    """
    received_at = time.monotonic()
    if not data:
        raise BadFrame("empty frame: the body has zero bytes")
    if len(data) > max_bytes:
        raise BadFrame(f"frame too large: {len(data)} bytes, limit {max_bytes}")
    declared = (content_type or "").split(";")[0].strip().lower() or None
    if declared is not None and declared not in ACCEPTED_CONTENT_TYPES:
        raise BadFrame(f"unsupported content type {declared!r}: send image/jpeg or image/png")
    sniffed = sniff_content_type(data)
    if sniffed is None:
        raise BadFrame("not a JPEG or PNG image (unrecognised leading bytes)")
    if declared is not None and declared != sniffed:
        raise BadFrame(f"content type says {declared} but the bytes are {sniffed}")
    buffer = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3 or image.shape[2] != 3:
        raise BadFrame(f"corrupt {sniffed}: the image cannot be decoded")
    height, width = image.shape[:2]
    if height * width > _MAX_PIXELS or height < 16 or width < 16:
        raise BadFrame(f"image size {width}x{height} is out of bounds")
    return Frame(
        camera_id=camera_id,
        encoded=data,
        content_type=sniffed,
        image_bgr=image,
        received_at=received_at,
        metadata=dict(metadata or {}),
        source=source,
    )
