"""The tus client's pure decisions: offsets, resume, restart, give up (no sockets)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.errors import CloudRejected, RetryableUploadError
from sync.upload_state import (
    CHECKSUM_RETRIES,
    WHOLE_SHA256_MISMATCH,
    PatchRefusal,
    Refusal,
    TusUploadState,
    creation_with_upload,
    damaged_again,
    refusal,
    upload_gone,
)

SHA = "ab" * 32


def at(offset: object) -> dict[str, str]:
    return {"Upload-Offset": str(offset)}


def test_a_resumed_upload_goes_on_from_the_servers_offset() -> None:
    upload = TusUploadState(SHA, 1000, "/v1/uploads/u1")
    upload.resumed(at(400))
    assert (upload.offset, upload.started_at, upload.done, upload.forget) == (
        400,
        400,
        False,
        False,
    )
    upload.resumed(at(1000))
    assert upload.done


def test_an_offset_beyond_what_was_sent_drops_the_upload() -> None:
    upload = TusUploadState(SHA, 1000, "/v1/uploads/u1")
    with pytest.raises(RetryableUploadError, match="claims Upload-Offset 1001"):
        upload.resumed(at(1001))
    assert upload.forget and upload.upload_path is None


@pytest.mark.parametrize("value", [None, "x", "", "-1"])
def test_a_missing_or_bad_offset_is_retryable_and_keeps_the_upload(value: object) -> None:
    upload = TusUploadState(SHA, 1000, "/v1/uploads/u1")
    headers = {} if value is None else at(value)
    with pytest.raises(RetryableUploadError, match="Upload-Offset"):
        upload.resumed(headers)
    assert not upload.forget and upload.upload_path == "/v1/uploads/u1"


def test_a_gone_upload_starts_over() -> None:
    upload = TusUploadState(SHA, 1000, "/v1/uploads/u1")
    upload.gone()
    assert upload.forget and upload.upload_path is None and not upload.done
    assert upload_gone(404) and upload_gone(410) and not upload_gone(423)


def test_creation_with_upload_sends_small_blobs_whole() -> None:
    assert creation_with_upload(10, 10) and not creation_with_upload(11, 10)
    assert not creation_with_upload(0, 10)  # an empty blob: a plain creation
    upload = TusUploadState(SHA, 10)
    upload.created("/v1/uploads/u2", at(10), body_bytes=10)
    assert upload.done and upload.started_at == 10
    plain = TusUploadState(SHA, 100)
    plain.created("/v1/uploads/u3", {}, body_bytes=0)
    assert plain.offset == 0 and not plain.done
    bad = TusUploadState(SHA, 10)
    with pytest.raises(RetryableUploadError, match="claims"):
        bad.created("/v1/uploads/u4", at(11), body_bytes=10)
    assert bad.forget


def test_patches_advance_and_a_stuck_one_is_an_error() -> None:
    upload = TusUploadState(SHA, 100, "/v1/uploads/u1")
    assert upload.patch_answered(40, at(40)) is False
    assert upload.patch_answered(40, at(60)) is True  # the server took 20 of 40 bytes
    assert upload.offset == 60
    with pytest.raises(RetryableUploadError, match="made no progress"):
        upload.patch_answered(40, at(60))
    with pytest.raises(RetryableUploadError, match="claims"):
        upload.patch_answered(40, at(101))
    assert upload.forget


def test_a_damaged_chunk_is_resent_a_few_times_then_the_upload_decides() -> None:
    upload = TusUploadState(SHA, 100, "/v1/uploads/u1")
    steps = [upload.patch_refused(460) for _ in range(CHECKSUM_RETRIES)]
    assert steps == [PatchRefusal.RESEND] * (CHECKSUM_RETRIES - 1) + [PatchRefusal.REFUSED]
    assert upload.patch_refused(409) is PatchRefusal.ASK_OFFSET
    assert upload.patch_refused(403) is PatchRefusal.REFUSED
    fresh = TusUploadState(SHA, 100, "/v1/uploads/u1")
    fresh.patch_refused(460)
    fresh.patch_answered(10, at(10))  # a chunk got through: the next one has its own tries
    assert fresh.patch_refused(460) is PatchRefusal.RESEND
    fresh.offset_asked(at(50))
    assert fresh.offset == 50


@pytest.mark.parametrize(
    ("status", "error", "verdict"),
    [
        (404, "not_found", Refusal.RESTART),
        (409, "offset_conflict", Refusal.RESTART),
        (410, "gone", Refusal.RESTART),
        (460, "checksum_mismatch", Refusal.RESTART),
        (410, WHOLE_SHA256_MISMATCH, Refusal.CHECK_COPY),
        (400, WHOLE_SHA256_MISMATCH, Refusal.STOP),
        (403, "forbidden", Refusal.STOP),
        (413, "too_large", Refusal.STOP),
        (415, "unsupported", Refusal.STOP),
    ],
)
def test_refusals(status: int, error: str, verdict: Refusal) -> None:
    assert refusal(status, error) is verdict
    upload = TusUploadState(SHA, 100, "/v1/uploads/u1")
    assert upload.refused(status, error) is verdict
    assert upload.forget is (verdict is not Refusal.STOP)  # a new upload: drop this one


def test_a_whole_mismatch_checks_the_copy() -> None:
    refused = CloudRejected(410, WHOLE_SHA256_MISMATCH, "the whole does not hash right")
    upload = TusUploadState(SHA, 100, "/v1/uploads/u1")
    damaged, error = upload.copy_checked(SHA, refused)
    assert not damaged and "must restart" in str(error)
    damaged, error = upload.copy_checked("cd" * 32, refused)
    assert damaged and "is damaged" in str(error) and "410 upload_sha256_mismatch" in str(error)
    assert damaged_again(SHA, SHA) is None
    again = damaged_again(SHA, "cd" * 32)
    assert again is not None and not again.retryable


answers = st.one_of(
    st.tuples(st.just("patch_ok"), st.integers(-5, 300), st.integers(1, 64)),
    st.tuples(st.just("patch_refused"), st.sampled_from([409, 460, 403, 410]), st.just(0)),
    st.tuples(st.just("head"), st.integers(-5, 300), st.just(0)),
)


@given(st.integers(0, 256), st.lists(answers, max_size=30))
def test_the_offset_never_counts_bytes_never_sent(
    length: int, script: list[tuple[str, int, int]]
) -> None:
    """Whatever the server answers, the offset stays within the bytes sent (and the
    blob), a PATCH that is accepted always moves it forward, and a dropped upload
    is never called done."""
    upload = TusUploadState(SHA, length, "/v1/uploads/u1")
    for kind, value, size in script:
        if upload.upload_path is None:
            break
        before = upload.offset
        try:
            if kind == "patch_ok":
                sent = min(size, length - before)
                upload.patch_answered(sent, at(value))
                assert before < upload.offset <= before + sent
            elif kind == "patch_refused":
                upload.patch_refused(value)
                assert upload.offset == before
            else:
                upload.offset_asked(at(value))
        except RetryableUploadError:
            assert upload.offset == before
        assert 0 <= upload.offset <= length
        assert upload.forget is (upload.upload_path is None)
    assert not (upload.done and upload.upload_path is None)
