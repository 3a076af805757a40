"""Typed errors of model updates (under ``ApplianceError``).  Signature, length and hash
refusals are ``sync.shared.signing.VerificationError``s; these are the rest."""

from __future__ import annotations

from appliance.errors import ApplianceError

__all__ = ["NothingToRollBack", "ReleaseError", "ReleaseValidationFailed", "SlotStateError"]


class ReleaseError(ApplianceError):
    """A release cannot be built or used as given (bad model directory, bad release.json)."""

    http_status = 422
    code = "release_refused"


class ReleaseValidationFailed(ReleaseError):
    """The staged model did not reproduce its golden outputs, missed its latency budget,
    or carries a derived file its record does not vouch for.

    ``check`` is ``golden``, ``latency`` or ``derived`` (for the audit record and the
    cloud's report)."""

    code = "validation_failed"

    def __init__(self, message: str, *, check: str) -> None:
        super().__init__(message)
        self.check = check


class SlotStateError(ApplianceError):
    """The slot state file is unreadable; the agent falls back to the pinned models."""


class NothingToRollBack(ReleaseError):
    """The pinned models serve this task (or it is unknown here): no rollback target."""

    http_status = 409
    code = "nothing_to_roll_back"
