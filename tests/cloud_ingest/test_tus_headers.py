"""Pure tus header parsing and the upload state machine (no I/O)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_ingest.errors import BadRequest, Conflict, PayloadTooLarge
from cloud_ingest.tus.core import UploadInfo, plan_creation, plan_patch
from cloud_ingest.tus.headers import (
    encode_metadata,
    parse_checksum,
    parse_metadata,
    parse_non_negative,
)


def test_metadata_pairs_and_empty_values() -> None:
    assert parse_metadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential") == {
        "filename": "world_domination_plan.pdf",
        "is_confidential": "",
    }
    assert parse_metadata(None) == {}
    assert parse_metadata("") == {}


@pytest.mark.parametrize("bad", ["k", "k v w", " ,", "k !!!", "k a,k a", "k /w==", "é YQ=="])
def test_malformed_metadata_is_400(bad: str) -> None:
    if bad == "k":
        assert parse_metadata(bad) == {"k": ""}
        return
    with pytest.raises(BadRequest):
        parse_metadata(bad)


@given(st.dictionaries(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), st.text(max_size=30)))
def test_metadata_round_trips(meta: dict[str, str]) -> None:
    assert parse_metadata(encode_metadata(meta)) == meta


def test_checksum_parsing() -> None:
    digest = hashlib.sha1(b"x").digest()
    parsed = parse_checksum(f"sha1 {base64.b64encode(digest).decode()}")
    assert parsed is not None
    assert (parsed.algorithm, parsed.digest) == ("sha1", digest)
    assert parse_checksum(None) is None
    for bad in ("md5 AAAA", "sha256", "sha256 !!", "sha256 " + base64.b64encode(digest).decode()):
        with pytest.raises(BadRequest):
            parse_checksum(bad)


@pytest.mark.parametrize("bad", ["-1", "1.5", "", "x", "1" * 20, "١٢"])
def test_offsets_must_be_plain_non_negative_integers(bad: str) -> None:
    with pytest.raises(BadRequest):
        parse_non_negative("Upload-Offset", bad)
    assert parse_non_negative("Upload-Offset", " 42 ") == 42


def test_creation_decisions() -> None:
    assert plan_creation(10, None, 100) == 10
    assert plan_creation(None, "1", 100) is None
    with pytest.raises(BadRequest):
        plan_creation(None, None, 100)
    with pytest.raises(BadRequest):
        plan_creation(None, "0", 100)
    with pytest.raises(BadRequest):
        plan_creation(10, "1", 100)
    with pytest.raises(PayloadTooLarge):
        plan_creation(101, None, 100)


def test_patch_decisions() -> None:
    info = UploadInfo("u" * 32, "dev", 10)
    plan = plan_patch(info, 4, claimed_offset=4, content_length=6, upload_length=None, max_size=99)
    assert (plan.offset, plan.limit, plan.new_length) == (4, 6, None)
    with pytest.raises(Conflict):
        plan_patch(info, 4, claimed_offset=3, content_length=1, upload_length=None, max_size=99)
    with pytest.raises(PayloadTooLarge):
        plan_patch(info, 4, claimed_offset=4, content_length=7, upload_length=None, max_size=99)
    with pytest.raises(BadRequest):
        plan_patch(info, 4, claimed_offset=4, content_length=1, upload_length=11, max_size=99)
    deferred = UploadInfo("u" * 32, "dev", None)
    plan = plan_patch(deferred, 4, claimed_offset=4, content_length=2, upload_length=6, max_size=99)
    assert (plan.limit, plan.new_length) == (2, 6)
    with pytest.raises(PayloadTooLarge):
        plan_patch(deferred, 4, claimed_offset=4, content_length=2, upload_length=100, max_size=99)
    with pytest.raises(Conflict):
        plan_patch(
            UploadInfo("u" * 32, "dev", 4, completed=True),
            4,
            claimed_offset=4,
            content_length=0,
            upload_length=None,
            max_size=99,
        )
