from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from appliance.inference import iso6346
from appliance.inference.text_kinds import classify_line, classify_text, parse_uk_plate


def test_code_split_over_three_boxes_is_joined() -> None:
    found = classify_line(["CSQU", "305438", "3"])
    assert [(f.kind, f.value, f.valid, f.start, f.end) for f in found] == [
        ("container_code", "CSQU3054383", True, 0, 3)
    ]


def test_code_and_plate_and_text_on_one_line() -> None:
    found = classify_line(["MAX GROSS", "CSQU 305438 4", "AB12", "CDE"])
    assert [(f.kind, f.value, f.valid) for f in found] == [
        ("text", "MAX GROSS", None),
        ("container_code", "CSQU3054384", False),
        ("plate", "AB12 CDE", True),
    ]


def test_uk_plate_repairs_look_alikes_by_position() -> None:
    assert parse_uk_plate("AB12 CD0") == "AB12 CDO"
    assert parse_uk_plate("A812 CDE") == "AB12 CDE"
    assert parse_uk_plate("AB12 CD") is None
    assert parse_uk_plate("A81S CDE") is None  # two repairs: too far from a plate
    assert parse_uk_plate("XG41 0T0") == "XG41 OTO"  # O/0 is the common confusion


def test_unknown_plate_format_is_a_plate_of_unknown_validity() -> None:
    assert classify_text("KA 01 AB 1234") == ("text", "KA 01 AB 1234", None)
    assert classify_text("B-XY 123") == ("plate", "B-XY 123", None)
    assert classify_text("HELLO") == ("text", "HELLO", None)


@given(
    st.text(alphabet=string.ascii_uppercase, min_size=3, max_size=3),
    st.text(alphabet=string.digits, min_size=6, max_size=6),
    st.lists(st.integers(1, 10), max_size=3, unique=True),
)
def test_a_code_split_anywhere_is_found_whole(owner: str, serial: str, cuts: list[int]) -> None:
    first_ten = f"{owner}U{serial}"
    code = first_ten + str(iso6346.check_digit(first_ten))
    bounds = [0, *sorted(cuts), 11]
    pieces = [code[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    found = classify_line(["GROSS", *pieces])
    assert ("container_code", code, True) in [(f.kind, f.value, f.valid) for f in found]
