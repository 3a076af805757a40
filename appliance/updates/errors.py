"""Typed errors of model updates (under ``ApplianceError``).  Signature, length and hash
refusals are ``sync.shared.signing.VerificationError``s; these are the rest."""

from __future__ import annotations

from appliance.errors import ApplianceError

__all__ = ["ReleaseError", "ReleaseValidationFailed", "SlotStateError"]


class ReleaseError(ApplianceError):
    """A release cannot be built or used as given (bad model directory, bad release.json)."""


class ReleaseValidationFailed(ReleaseError):
    """The staged model did not reproduce its golden outputs or missed its latency budget.

    ``check`` is ``golden`` or ``latency`` (for the audit record and the cloud's report)."""

    def __init__(self, message: str, *, check: str) -> None:
        super().__init__(message)
        self.check = check


class SlotStateError(ApplianceError):
    """The slot state file is unreadable; the agent falls back to the pinned models."""
