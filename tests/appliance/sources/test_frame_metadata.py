"""X-Frame-Metadata: only the site's keys, flat values, and a reason for every refusal."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.errors import BadFrameMetadata
from appliance.sources.frame_metadata import (
    MAX_STRING_CHARS,
    encode_frame_metadata,
    parse_frame_metadata,
)

ALLOWED = ("lane", "direction", "transaction_id")


def test_listed_keys_with_flat_values_are_taken_as_sent() -> None:
    raw = '{"lane": 3, "direction": "in", "transaction_id": null}'
    assert parse_frame_metadata(raw, ALLOWED) == {
        "lane": 3,
        "direction": "in",
        "transaction_id": None,
    }
    assert parse_frame_metadata('{"lane": 2.5}', ALLOWED) == {"lane": 2.5}
    assert parse_frame_metadata('{"lane": true}', ALLOWED) == {"lane": True}
    assert parse_frame_metadata("{}", ALLOWED) == {}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('"lane"', "must be a JSON object"),
        ("[" * 5000 + "]" * 5000, "nested too deeply"),
        ('{"lane": 1, "plate": "AB12CDE"}', "keys ['plate'] are not in [local_api]"),
        ('{"Lane": 1}', "keys ['Lane'] are not in"),
        ('{"lane": [1, 2]}', "'lane' must be a string, number, boolean or null, not a JSON array"),
        ('{"lane": {"a": 1}}', "not a JSON object"),
        ('{"lane": NaN}', "'lane' is nan, not a finite number"),
        ('{"lane": -Infinity}', "not a finite number"),
        ('{"lane": "' + "x" * (MAX_STRING_CHARS + 1) + '"}', f"at most {MAX_STRING_CHARS}"),
    ],
)
def test_bad_metadata_is_refused_with_the_reason(raw: str, reason: str) -> None:
    with pytest.raises(BadFrameMetadata) as refused:
        parse_frame_metadata(raw, ALLOWED)
    assert reason in str(refused.value)


def test_with_no_keys_listed_any_key_is_refused_and_says_so() -> None:
    with pytest.raises(BadFrameMetadata, match=r"frame_metadata_keys \(none\)"):
        parse_frame_metadata('{"lane": 1}', ())
    assert parse_frame_metadata("{}", ()) == {}


def test_the_column_value_is_compact_json_with_sorted_keys_or_null() -> None:
    assert encode_frame_metadata({}) is None
    assert encode_frame_metadata({"lane": 3, "direction": "in"}) == '{"direction":"in","lane":3}'


@given(st.text(max_size=200))
def test_any_header_value_is_taken_or_refused_never_another_error(raw: str) -> None:
    try:
        parsed = parse_frame_metadata(raw, ALLOWED)
    except BadFrameMetadata:
        return
    assert set(parsed) <= set(ALLOWED)
    encoded = encode_frame_metadata(parsed)
    assert encoded is None or json.loads(encoded) == parsed
