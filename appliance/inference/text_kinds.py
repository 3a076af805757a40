"""What a piece of gate-camera text is: a container code, a number plate, or other text.

OCR detection often splits one printed code into several boxes (``MSCU``,
``123456``, boxed ``7``; or ``AB12`` and ``CDE``).  ``classify_line`` takes
the texts of one line in reading order and greedily joins neighbours that
together form a container code (up to 4 pieces) or a plate (up to 2).

Plates: the UK format ``AB12 CDE`` (two letters, two digits, three letters)
is recognised with the same positional look-alike repair as container codes
(O/0 freely, at most one other character) and reported ``valid=True``; other
short mixed letter/digit strings (5-8 characters) are reported as plates with
``valid=None`` (unknown format).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from appliance.inference import iso6346

__all__ = ["ClassifiedText", "classify_line", "classify_text", "parse_uk_plate"]

_NOISE = re.compile(r"[^0-9A-Z]")
_UK_PLATE = re.compile(r"^[A-Z]{2}[0-9]{2}[A-Z]{3}$")
_TO_LETTER = str.maketrans({"0": "O", "1": "I", "2": "Z", "5": "S", "6": "G", "8": "B"})
_TO_DIGIT = str.maketrans({"O": "0", "Q": "0", "D": "0", "I": "1", "Z": "2", "S": "5", "B": "8"})
_MAX_CONTAINER_PIECES = 4
_MAX_PLATE_PIECES = 2
_MAX_PLATE_REPAIRS = 1


@dataclass(frozen=True, slots=True)
class ClassifiedText:
    """One result: pieces ``[start, end)`` of the line make a ``kind`` with ``value``."""

    start: int
    end: int
    kind: str  # container_code | plate | text
    value: str
    valid: bool | None


def parse_uk_plate(text: str) -> str | None:
    """``"AB12 CDE"`` if ``text`` reads as a current-format UK plate, else None.

    ``O``/``0`` confusions are repaired by position (``AB12 CD0`` -> ``AB12 CDO``),
    and at most one other look-alike (``A812`` -> ``AB12``): plates carry no check
    digit, so more repairs would turn words into plates.
    """
    cleaned = _NOISE.sub("", text.upper())
    if len(cleaned) != 7:
        return None
    repaired = (
        cleaned[:2].translate(_TO_LETTER)
        + cleaned[2:4].translate(_TO_DIGIT)
        + cleaned[4:].translate(_TO_LETTER)
    )
    repairs = sum(a != b and {a, b} != {"O", "0"} for a, b in zip(cleaned, repaired, strict=True))
    if repairs > _MAX_PLATE_REPAIRS:
        return None
    if not _UK_PLATE.match(repaired):
        return None
    return f"{repaired[:4]} {repaired[4:]}"


def _generic_plate(text: str) -> str | None:
    stripped = text.strip().upper()
    cleaned = _NOISE.sub("", stripped)
    if not 5 <= len(cleaned) <= 8 or len(stripped) - len(cleaned) > 2:
        return None
    if not (re.search(r"[A-Z]", cleaned) and re.search(r"[0-9]", cleaned)):
        return None
    return stripped


def classify_text(text: str) -> tuple[str, str, bool | None]:
    """``(kind, value, valid)`` for a single piece of text."""
    code = iso6346.parse(text)
    if code is not None:
        return "container_code", code.code, code.valid
    plate = parse_uk_plate(text)
    if plate is not None:
        return "plate", plate, True
    generic = _generic_plate(text)
    if generic is not None:
        return "plate", generic, None
    return "text", text.strip(), None


def _find_codes(pieces: Sequence[str]) -> list[ClassifiedText]:
    """Container codes made of 1-4 neighbouring pieces, left to right, longest join first."""
    found: list[ClassifiedText] = []
    start = 0
    while start < len(pieces):
        for end in range(min(len(pieces), start + _MAX_CONTAINER_PIECES), start, -1):
            code = iso6346.parse("".join(pieces[start:end]))
            if code is not None:
                found.append(ClassifiedText(start, end, "container_code", code.code, code.valid))
                start = end
                break
        else:
            start += 1
    return found


def _classify_run(pieces: Sequence[str], offset: int) -> list[ClassifiedText]:
    """Plates (1-2 pieces) and single texts in a run of pieces that holds no code."""
    found: list[ClassifiedText] = []
    start = 0
    while start < len(pieces):
        item: ClassifiedText | None = None
        if start + 1 < len(pieces):
            plate = parse_uk_plate(pieces[start] + pieces[start + 1])
            if plate is not None:
                item = ClassifiedText(offset + start, offset + start + 2, "plate", plate, True)
        if item is None:
            kind, value, valid = classify_text(pieces[start])
            item = ClassifiedText(offset + start, offset + start + 1, kind, value, valid)
        if item.value:
            found.append(item)
        start = item.end - offset
    return found


def classify_line(pieces: Sequence[str]) -> list[ClassifiedText]:
    """Classify the texts of one line (reading order), joining neighbours into codes.

    Container codes are found first (their check digit makes a join trustworthy);
    plates and other text are then read from the pieces between them.
    """
    results: list[ClassifiedText] = []
    cursor = 0
    for code in [*_find_codes(pieces), None]:
        stop = code.start if code is not None else len(pieces)
        results.extend(_classify_run(pieces[cursor:stop], cursor))
        if code is not None:
            results.append(code)
            cursor = code.end
    return results
