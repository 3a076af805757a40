"""``release.json``: what a release archive holds besides its model files.

Layout of a release (an uncompressed tar, every file listed in the signed
manifest with its size and sha256)::

    release.json            this document
    model/<file>            the model files, by role (gate_ocr: det, rec; face_anonymize: face)
    model/<derived>         files 'make models' derived from them (INT8, folded) and the
                            record vouching for each (``derived_members``)
    golden/<nnn>.png        golden input frames
    validation.json         the model's validation report from the operator's machine
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from appliance.updates.errors import ReleaseError
from sync.protocol.releases import NAME_RE

__all__ = [
    "CONTENTS_FILE",
    "VALIDATION_FILE",
    "ExpectedDetection",
    "GoldenCase",
    "ReleaseContents",
    "load_contents",
    "parse_contents",
]

CONTENTS_FILE = "release.json"
VALIDATION_FILE = "validation.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExpectedDetection(_Strict):
    kind: str
    value: str
    confidence: float = Field(ge=0, le=1)


class GoldenCase(_Strict):
    """One golden input and what the model must find in it."""

    input: str  # path in the release, e.g. golden/000.png
    expected: list[ExpectedDetection]


class ReleaseContents(_Strict):
    format: Literal[1] = 1
    name: str = Field(pattern=NAME_RE.pattern)
    version: str = Field(pattern=NAME_RE.pattern)
    task: str = Field(min_length=1, max_length=64)
    runtime: Literal["onnxruntime", "litert"]
    device_classes: list[str] = Field(min_length=1)
    models: dict[str, str]  # role -> path in the release
    golden: list[GoldenCase] = Field(min_length=1)
    confidence_tolerance: float = Field(default=0.05, ge=0, le=1)  # golden confidences may drift
    validation: str = VALIDATION_FILE

    def dump(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True).encode() + b"\n"


def load_contents(root: Path) -> ReleaseContents:
    """Read ``release.json`` of an extracted release."""
    try:
        data = (root / CONTENTS_FILE).read_bytes()
    except OSError as exc:
        raise ReleaseError(f"{root / CONTENTS_FILE}: cannot read: {exc}") from exc
    return parse_contents(data, where=str(root / CONTENTS_FILE))


def parse_contents(data: bytes, *, where: str = CONTENTS_FILE) -> ReleaseContents:
    try:
        value: Any = json.loads(data)
        return ReleaseContents.model_validate(value)
    except (ValueError, ValidationError) as exc:
        raise ReleaseError(f"{where}: not a valid release.json: {exc}") from exc
