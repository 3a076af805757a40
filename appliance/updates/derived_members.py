"""Derived model files in a release: packed beside their sources, checked before loading.

``make models`` (``yardlink models quantize DIR``) derives files from the models in a
directory, pinned or retrained (the INT8 detector, the folded recognizer and INT8
detector) and writes beside each a record that vouches for it
(``appliance.inference.derived_files``).  A release carries them, records included,
as ordinary signed members under ``model/`` beside their sources, so a task loaded
from a release picks its files exactly as from the models directory: what was signed
and validated is what runs (docs/OTA.md, "Derived model files").

Both ends check every one with the inference code's own record check, which names the
sha256 of the source file beside it (the release's own source):

* ``derived_members`` (packaging): a derivation whose source is packaged must be in
  the model directory and vouched for, else ``ReleaseError``;
* ``check_derived`` (loading a release on the device, ``models verify``): a derived
  file or record that does not vouch fails the release with ``ReleaseValidationFailed``
  (check ``derived``); it is never loaded, and the plain file never silently replaces it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from appliance.inference.model_fold import FOLDS, folded_path
from appliance.inference.quantize import (
    DET_FP32_MODEL,
    DET_INT8_MODEL,
    DET_INT8_RECORD,
    int8_detector_path,
)
from appliance.updates.errors import ReleaseError, ReleaseValidationFailed

__all__ = ["DERIVATIONS", "DERIVED_CHECK", "Derivation", "check_derived", "derived_members"]

DERIVED_CHECK = "derived"  # the check name of a derived file that does not vouch


@dataclass(frozen=True, slots=True)
class Derivation:
    """A file derived from ``source`` (both names in one directory) and its record."""

    source: str
    derived: str
    record: str
    vouched: Callable[[Path], Path | None]  # the loader's own check on a directory


# In derivation order: the INT8 detector is the source of its folded sibling.
DERIVATIONS: tuple[Derivation, ...] = (
    Derivation(DET_FP32_MODEL, DET_INT8_MODEL, DET_INT8_RECORD, int8_detector_path),
    *(Derivation(f.source, f.folded, f.record, functools.partial(folded_path, f)) for f in FOLDS),
)


def _problem(derivation: Derivation, directory: Path) -> str | None:
    """Why ``directory``'s derived file is not to be used, or None when it vouches."""
    d = derivation
    if not (directory / d.derived).is_file() or not (directory / d.record).is_file():
        missing = d.derived if not (directory / d.derived).is_file() else d.record
        return f"{missing} is missing"
    if not (directory / d.source).is_file():
        return f"{d.derived} is there without its source {d.source}"
    if d.vouched(directory) is None:
        return (
            f"{d.record} does not vouch for {d.derived} (altered, stale, not derived from "
            f"this {d.source}, or not by this code's recipe)"
        )
    return None


def derived_members(sources: Mapping[str, Path], model_dir: Path) -> dict[str, Path]:
    """The derived files and records to pack beside ``sources`` (file name in the release
    -> path on disk), each vouched for; ``ReleaseError`` naming the fix otherwise."""
    names = dict(sources)
    added: dict[str, Path] = {}
    for d in DERIVATIONS:
        source = names.get(d.source)
        if source is None:
            continue
        problem = _problem(d, source.parent)
        if problem is not None:
            raise ReleaseError(
                f"{source.parent}: {problem}: run 'yardlink models quantize {model_dir}' "
                "(make models), or package with --no-derived to ship the plain files only"
            )
        for name in (d.derived, d.record):
            names[name] = added[name] = source.parent / name
    return added


def check_derived(directory: Path) -> list[str]:
    """The derived files in a release's model ``directory``, each checked;
    ``ReleaseValidationFailed`` (check ``derived``) when one does not vouch."""
    found = []
    for d in DERIVATIONS:
        if not ((directory / d.derived).exists() or (directory / d.record).exists()):
            continue
        problem = _problem(d, directory)
        if problem is not None:
            raise ReleaseValidationFailed(
                f"{directory.name}/{d.derived}: {problem}; the release is not used",
                check=DERIVED_CHECK,
            )
        found.append(d.derived)
    return found
