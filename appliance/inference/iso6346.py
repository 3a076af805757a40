"""ISO 6346 freight container codes: parse, validate the check digit, read OCR text.

A code is 11 characters: a 3-letter owner code, an equipment category letter
(``U`` freight container, ``J`` detachable equipment, ``Z`` trailer/chassis),
a 6-digit serial number and a check digit, printed like ``MSCU 123456 7``
(the check digit is often boxed).

Check digit: each of the first 10 characters gets a value (digits are
themselves; letters count up from A=10 skipping multiples of 11, so B=12,
L=23, V=34), value *i* is weighted by 2**i, the sum is taken mod 11 and then
mod 10 (a remainder of 10 gives 0).

``parse`` is tolerant of what OCR produces: spaces, dashes, box outlines read
as ``|`` or ``[ ]``, lower case, and letter/digit look-alikes in the wrong
part of the code (``O`` for ``0`` in the serial, ``0`` for ``O`` in the owner
code, ...).  It returns a ``ContainerCode`` whose ``valid`` says whether the
check digit matches, so a near miss can still be reported as a container code
with ``valid=False``.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

__all__ = [
    "CATEGORIES",
    "ContainerCode",
    "check_digit",
    "letter_value",
    "normalize",
    "normalize_owner",
    "normalize_prefix",
    "parse",
]

CATEGORIES = frozenset("UJZ")


def _letter_values() -> dict[str, int]:
    values: dict[str, int] = {}
    value = 10
    for letter in string.ascii_uppercase:
        if value % 11 == 0:
            value += 1
        values[letter] = value
        value += 1
    return values


_LETTER_VALUES = _letter_values()

# OCR look-alikes: what a digit in a letter position most likely was, and vice versa.
_DIGIT_AS_LETTER = str.maketrans({"0": "O", "1": "I", "2": "Z", "5": "S", "6": "G", "8": "B"})
_LETTER_AS_DIGIT = str.maketrans(
    {
        "O": "0",
        "Q": "0",
        "D": "0",
        "I": "1",
        "L": "1",
        "T": "1",
        "Z": "2",
        "S": "5",
        "B": "8",
        "G": "6",
    }
)
_NOISE = re.compile(r"[^0-9A-Z]")
_SHAPE = re.compile(r"^[A-Z]{3}[UJZ][0-9]{7}$")
_PREFIX_SHAPE = re.compile(r"^[A-Z]{3}[UJZ][0-9]{6}$")
_OWNER_SHAPE = re.compile(r"^[A-Z]{3}[UJZ]$")


def letter_value(char: str) -> int:
    """The ISO 6346 numeric value of one character (digit or capital letter)."""
    if char.isdigit():
        return int(char)
    try:
        return _LETTER_VALUES[char]
    except KeyError:
        raise ValueError(f"{char!r} is not an ISO 6346 character") from None


def check_digit(first_ten: str) -> int:
    """The check digit of the first 10 characters (owner, category, serial)."""
    if len(first_ten) != 10:
        raise ValueError(f"need 10 characters, got {len(first_ten)}: {first_ten!r}")
    total = sum(letter_value(c) << i for i, c in enumerate(first_ten))
    return total % 11 % 10


@dataclass(frozen=True, slots=True)
class ContainerCode:
    """A container code in canonical form, valid or not."""

    owner: str  # 3 letters
    category: str  # U, J or Z
    serial: str  # 6 digits
    check: int  # the check digit as read

    @property
    def code(self) -> str:
        """The 11 characters without spaces, e.g. ``MSCU1234565``."""
        return f"{self.owner}{self.category}{self.serial}{self.check}"

    @property
    def expected_check(self) -> int:
        return check_digit(self.code[:10])

    @property
    def valid(self) -> bool:
        return self.check == self.expected_check

    def __str__(self) -> str:
        return f"{self.owner}{self.category} {self.serial} {self.check}"


def normalize(text: str) -> str | None:
    """The 11-character canonical candidate hidden in OCR ``text``, or None.

    Removes everything but letters and digits, upper-cases, then repairs
    look-alikes by position: the first four characters must be letters, the
    last seven digits.  Returns None when the result does not have the shape
    of a container code (wrong length, category not U/J/Z).
    """
    cleaned = _NOISE.sub("", text.upper())
    if len(cleaned) != 11:
        return None
    candidate = cleaned[:4].translate(_DIGIT_AS_LETTER) + cleaned[4:].translate(_LETTER_AS_DIGIT)
    return candidate if _SHAPE.match(candidate) else None


def normalize_prefix(text: str) -> str | None:
    """Like ``normalize`` for the first 10 characters only (the check digit not yet read)."""
    cleaned = _NOISE.sub("", text.upper())
    if len(cleaned) != 10:
        return None
    candidate = cleaned[:4].translate(_DIGIT_AS_LETTER) + cleaned[4:].translate(_LETTER_AS_DIGIT)
    return candidate if _PREFIX_SHAPE.match(candidate) else None


def normalize_owner(text: str) -> str | None:
    """The owner code and category (``MSCU``) if that is all ``text`` holds, else None.

    Container doors often print the owner code on its own line above the serial.
    """
    cleaned = _NOISE.sub("", text.upper()).translate(_DIGIT_AS_LETTER)
    return cleaned if _OWNER_SHAPE.match(cleaned) else None


def parse(text: str) -> ContainerCode | None:
    """Parse OCR ``text`` into a ``ContainerCode`` (check ``.valid``), or None if no code."""
    candidate = normalize(text)
    if candidate is None:
        return None
    return ContainerCode(
        owner=candidate[:3], category=candidate[3], serial=candidate[4:10], check=int(candidate[10])
    )
