from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.inference import iso6346

owners = st.text(alphabet=string.ascii_uppercase, min_size=3, max_size=3)
categories = st.sampled_from("UJZ")
serials = st.text(alphabet=string.digits, min_size=6, max_size=6)


def _remainder(first_ten: str) -> int:
    return sum(iso6346.letter_value(c) << i for i, c in enumerate(first_ten)) % 11


def test_letter_values_skip_multiples_of_eleven() -> None:
    values = {c: iso6346.letter_value(c) for c in "ABKLUVZ"}
    assert values == {"A": 10, "B": 12, "K": 21, "L": 23, "U": 32, "V": 34, "Z": 38}
    assert all(iso6346.letter_value(c) % 11 for c in string.ascii_uppercase)


@pytest.mark.parametrize(
    ("text", "code", "valid"),
    [
        ("CSQU3054383", "CSQU3054383", True),  # the standard's worked example
        ("CSQU 305438 3", "CSQU3054383", True),
        ("csqu-305438-[3]", "CSQU3054383", True),
        ("CSQU 3O5438 3", "CSQU3054383", True),  # O read for 0 in the serial
        ("C5QU 305438 3", "CSQU3054383", True),  # 5 read for S in the owner code
        ("CSQU 305438 4", "CSQU3054384", False),  # near-valid: wrong check digit
    ],
)
def test_parse_tolerates_ocr_noise(text: str, code: str, valid: bool) -> None:
    parsed = iso6346.parse(text)
    assert parsed is not None
    assert (parsed.code, parsed.valid) == (code, valid)


@pytest.mark.parametrize("text", ["", "CSQU305438", "CSQX3054383", "CSQU30543831", "AB12 CDE"])
def test_parse_rejects_non_codes(text: str) -> None:
    assert iso6346.parse(text) is None


@given(owners, categories, serials)
def test_generated_codes_validate_and_round_trip(owner: str, category: str, serial: str) -> None:
    first_ten = owner + category + serial
    check = iso6346.check_digit(first_ten)
    parsed = iso6346.parse(f"{owner}{category} {serial} {check}")
    assert parsed is not None
    assert parsed.valid
    assert parsed.code == f"{first_ten}{check}"
    assert str(parsed) == f"{owner}{category} {serial} {check}"


@given(owners, categories, serials, st.integers(0, 5), st.integers(1, 9))
def test_single_digit_error_is_caught(
    owner: str, category: str, serial: str, position: int, delta: int
) -> None:
    original = owner + category + serial
    digit = (int(serial[position]) + delta) % 10
    mutated = original[: 4 + position] + str(digit) + original[5 + position :]
    if {_remainder(original), _remainder(mutated)} == {0, 10}:
        return  # the one blind spot of the standard: remainders 10 and 0 both give 0
    assert iso6346.check_digit(mutated) != iso6346.check_digit(original)


@given(owners, categories, serials, st.lists(st.sampled_from([" ", "-", "."]), max_size=3))
def test_normalize_ignores_separators_and_case(
    owner: str, category: str, serial: str, noise: list[str]
) -> None:
    code = owner + category + serial + str(iso6346.check_digit(owner + category + serial))
    noisy = code.lower()
    for i, sep in enumerate(noise):
        cut = 4 + 2 * i
        noisy = noisy[:cut] + sep + noisy[cut:]
    assert iso6346.normalize(noisy) == code


@given(owners, categories, serials)
def test_prefix_normalisation(owner: str, category: str, serial: str) -> None:
    assert iso6346.normalize_prefix(f"{owner}{category} {serial}") == owner + category + serial


@pytest.mark.parametrize(
    ("text", "owner"), [("MSCU", "MSCU"), ("m5cu", "MSCU"), ("MSC", None), ("MSCX", None)]
)
def test_owner_line_on_its_own(text: str, owner: str | None) -> None:
    assert iso6346.normalize_owner(text) == owner
