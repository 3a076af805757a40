"""``X-Frame-Metadata``: the few operational fields a camera may attach to a frame.

They ride with each of the frame's ``events`` records to the cloud (the
``frame_metadata`` column, compact JSON with sorted keys).  So only the keys the
site lists in ``[local_api] frame_metadata_keys`` are taken: a field that could
hold PII (a driver's name, a plate typed in at the gate) must never leave the
site, and a key that is not listed is refused with the reason (a 400), never
dropped in silence.  Values are flat: a string of at most
``MAX_STRING_CHARS``, a finite number, a boolean or null.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from typing import Final

from appliance.errors import BadFrameMetadata

__all__ = [
    "MAX_STRING_CHARS",
    "MetadataValue",
    "encode_frame_metadata",
    "parse_frame_metadata",
]

MAX_STRING_CHARS: Final = 128
MetadataValue = str | int | float | bool | None


def parse_frame_metadata(raw: str, allowed: Collection[str]) -> dict[str, MetadataValue]:
    """The header's JSON object, checked; raises ``BadFrameMetadata`` saying what is wrong."""
    try:
        parsed = json.loads(raw)
    except RecursionError:
        raise BadFrameMetadata("X-Frame-Metadata is nested too deeply") from None
    except ValueError:
        raise BadFrameMetadata("X-Frame-Metadata is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise BadFrameMetadata("X-Frame-Metadata must be a JSON object")
    unknown = sorted(key for key in parsed if key not in allowed)
    if unknown:
        listed = ", ".join(sorted(allowed)) or "none"
        raise BadFrameMetadata(
            f"X-Frame-Metadata keys {unknown} are not in [local_api] frame_metadata_keys"
            f" ({listed}); only listed keys leave the site"
        )
    for key, value in parsed.items():
        _check_value(key, value)
    return parsed


def _check_value(key: str, value: object) -> None:
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadFrameMetadata(f"X-Frame-Metadata {key!r} is {value}, not a finite number")
        return
    if isinstance(value, str):
        if len(value) > MAX_STRING_CHARS:
            raise BadFrameMetadata(
                f"X-Frame-Metadata {key!r} has {len(value)} characters, at most {MAX_STRING_CHARS}"
            )
        return
    raise BadFrameMetadata(
        f"X-Frame-Metadata {key!r} must be a string, number, boolean or null,"
        f" not a JSON {'array' if isinstance(value, list) else 'object'}"
    )


def encode_frame_metadata(metadata: dict[str, MetadataValue]) -> str | None:
    """The ``frame_metadata`` column's value: compact JSON, sorted keys; None when empty."""
    if not metadata:
        return None
    return json.dumps(metadata, sort_keys=True, separators=(",", ":"), allow_nan=False)
