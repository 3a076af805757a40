"""Pure decisions of the device's tus client: offsets, resume, restart, give up.

No I/O: :class:`~sync.uploader.TusUploader` sends the requests and reads the
file; :class:`TusUploadState` takes each answer and says what holds now (the
offset the server has, whether the upload must start over) or raises the typed
error the engine acts on.

* An offset the server claims is trusted only up to the bytes we sent: a server
  (or proxy) claiming more would have us call a blob delivered that the cloud
  does not hold, so the upload is dropped (``forget``) and started again.
* A PATCH that moves the offset nowhere is an error (resending at once would
  loop at link speed); a 460 (chunk checksum) is resent a few times; a 409
  (offset conflict) asks the server's offset.
* A refusal that a new upload fixes (404/410 gone, 409, 460) restarts the
  upload; a 410 whole-upload sha256 mismatch first checks the device's copy;
  any other 4xx stops sending this blob (``PermanentUploadError``).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Final

from sync.errors import BlobCopyDamaged, CloudRejected, RetryableUploadError

__all__ = [
    "CHECKSUM_RETRIES",
    "FIXED_BY_A_NEW_UPLOAD",
    "WHOLE_SHA256_MISMATCH",
    "PatchRefusal",
    "Refusal",
    "TusUploadState",
    "creation_with_upload",
    "damaged_again",
    "refusal",
    "upload_gone",
]

CHECKSUM_RETRIES: Final = 3  # sends of one chunk the server found damaged (460)
# Refusals that say "this upload is gone or out of step", not "this blob is unwelcome":
# 404/410 upload expired or deleted, 409 offset conflict, 460 checksum of the body.
FIXED_BY_A_NEW_UPLOAD: Final = frozenset({404, 409, 410, 460})
WHOLE_SHA256_MISMATCH: Final = "upload_sha256_mismatch"  # 410: the whole does not hash right


class Refusal(Enum):
    """What a 4xx on an upload means for the blob."""

    RESTART = "restart"  # a new upload fixes it (retryable)
    CHECK_COPY = "check_copy"  # the whole did not hash right: was the device's copy sound?
    STOP = "stop"  # the same blob will be refused again (permanent)


class PatchRefusal(Enum):
    RESEND = "resend"  # 460 with sends left: the same chunk again
    ASK_OFFSET = "ask_offset"  # 409: our offset is stale, HEAD and go on
    REFUSED = "refused"  # the upload as a whole decides (``refusal``)


def refusal(status: int, error: str) -> Refusal:
    if status not in FIXED_BY_A_NEW_UPLOAD:
        return Refusal.STOP
    return Refusal.CHECK_COPY if error == WHOLE_SHA256_MISMATCH else Refusal.RESTART


def upload_gone(status: int) -> bool:
    """A HEAD refused with this status: the upload expired or was removed (start over)."""
    return status in (404, 410)


def creation_with_upload(length: int, first_chunk: int) -> bool:
    """Whether the blob goes whole in the creating POST (one round trip)."""
    return 0 < length <= first_chunk


class TusUploadState:
    """One upload call of one blob: the server's offset as far as we may trust it."""

    def __init__(self, sha256: str, length: int, upload_path: str | None = None) -> None:
        if length < 0:
            raise ValueError("length must be >= 0")
        self.sha256, self.length = sha256, length
        self.upload_path = upload_path
        self.offset = 0
        self.started_at = 0  # the offset this call resumed from
        self.forget = False  # the persisted upload path must be dropped (start over)
        self._checksum_failures = 0  # of the chunk being sent

    @property
    def done(self) -> bool:
        return self.upload_path is not None and self.offset >= self.length

    def resumed(self, headers: Mapping[str, str]) -> None:
        """The HEAD answer of the persisted upload: go on from its offset."""
        self.offset = self.started_at = self._claimed(headers, "HEAD", at_most=self.length)

    def gone(self) -> None:
        """The persisted upload is gone on the server (expired, removed)."""
        self.upload_path, self.forget = None, True

    def created(self, upload_path: str, headers: Mapping[str, str], body_bytes: int) -> None:
        """The creating POST answered; ``body_bytes`` went with it (creation-with-upload)."""
        self.upload_path, self.forget = upload_path, False
        offset = 0
        if body_bytes and "Upload-Offset" in headers:
            offset = self._claimed(headers, "POST", at_most=body_bytes)
        self.offset = self.started_at = offset

    def patch_answered(self, sent: int, headers: Mapping[str, str]) -> bool:
        """A PATCH of ``sent`` bytes at ``offset`` was accepted; True if the server
        took fewer bytes than sent (worth a warning, the rest is sent again)."""
        at = self.offset
        new = self._claimed(headers, "PATCH", at_most=at + sent)
        if new <= at:
            raise RetryableUploadError(
                f"PATCH of {sent} bytes of {self.sha256[:12]} at {at} made no progress "
                f"(server Upload-Offset {new}); resuming after a backoff"
            )
        self.offset, self._checksum_failures = new, 0
        return new != at + sent

    def patch_refused(self, status: int) -> PatchRefusal:
        if status == 460:
            self._checksum_failures += 1
            if self._checksum_failures < CHECKSUM_RETRIES:
                return PatchRefusal.RESEND
        if status == 409:
            return PatchRefusal.ASK_OFFSET
        return PatchRefusal.REFUSED

    def offset_asked(self, headers: Mapping[str, str]) -> None:
        """The HEAD after a 409 answered: go on from the server's offset."""
        self.offset = self._claimed(headers, "HEAD", at_most=self.length)
        self._checksum_failures = 0

    def refused(self, status: int, error: str) -> Refusal:
        """A 4xx ended this call: drop the upload when a new one fixes it."""
        verdict = refusal(status, error)
        if verdict is not Refusal.STOP:
            self.gone()
        return verdict

    def copy_checked(
        self, actual_sha256: str, refused: CloudRejected
    ) -> tuple[bool, RetryableUploadError]:
        """After a whole-upload mismatch the device's copy hashed to ``actual_sha256``:
        (whether the copy is damaged, the error that ends this call)."""
        sha = self.sha256
        if actual_sha256 == sha:  # damaged on the way: a new upload will do
            return False, RetryableUploadError(f"upload of {sha[:12]} must restart: {refused}")
        return True, RetryableUploadError(
            f"the device's copy of blob {sha[:12]} is damaged (its bytes hash to "
            f"{actual_sha256[:12]}; {refused.status} {refused.error}); the next copy is "
            "checked before it is sent"
        )

    def _claimed(self, headers: Mapping[str, str], what: str, at_most: int) -> int:
        """The answer's Upload-Offset, which may not count bytes we never sent."""
        value = headers.get("Upload-Offset")
        try:
            offset = int(str(value))
        except ValueError as exc:
            raise RetryableUploadError(f"{what} answer without a valid Upload-Offset") from exc
        if offset < 0:
            raise RetryableUploadError(f"{what} answer with negative Upload-Offset {offset}")
        if offset > at_most:
            self.gone()
            raise RetryableUploadError(
                f"{what} answer for {self.sha256[:12]} claims Upload-Offset {offset}, but at "
                f"most {at_most} bytes were sent; starting a new upload"
            )
        return offset


def damaged_again(sha256: str, actual_sha256: str) -> BlobCopyDamaged | None:
    """A copy checked before sending (the last one was damaged): the error, or None if sound."""
    if actual_sha256 == sha256:
        return None
    return BlobCopyDamaged(
        f"the device's copy of blob {sha256[:12]} is damaged (its bytes hash to "
        f"{actual_sha256[:12]}), again after the cloud refused it as not matching its sha256"
    )
