"""Typed errors of the appliance package.  The class tells the caller whether to retry.

Errors a local API client caused carry the HTTP status and the ``error`` code the
API answers with (``{"error": code, "detail": text}``, ``appliance.api``).
"""

from __future__ import annotations

__all__ = [
    "ApplianceError",
    "BadFrame",
    "BadFrameMetadata",
    "ConfigError",
    "FrameTooLarge",
    "ModelLoadError",
    "RuntimeUnavailable",
    "ShuttingDown",
    "UnsupportedFrameType",
    "error_summary",
]

_SUMMARY_CHARS = 300


class ApplianceError(Exception):
    """Root of every error raised by the appliance package."""

    retryable: bool = False
    user_facing: bool = True
    # the local API's answer when a request meets it; None: our fault, a plain 500
    http_status: int | None = None
    code: str = "appliance_error"


class ConfigError(ApplianceError):
    """The site configuration is invalid; the message lists every problem with its path."""


class RuntimeUnavailable(ApplianceError):
    """An inference runtime's library is missing here; the runtime is reported and skipped."""


class ModelLoadError(ApplianceError):
    """A model file is missing, does not match its pin, or the runtime cannot load it."""


class BadFrame(ApplianceError):
    """A frame cannot be decoded or is out of bounds (empty, corrupt, wrong size)."""

    http_status = 400
    code = "bad_frame"


class FrameTooLarge(BadFrame):
    """A frame's body is over ``[local_api] max_frame_bytes``."""

    http_status = 413
    code = "frame_too_large"


class UnsupportedFrameType(BadFrame):
    """A frame's declared content type is not JPEG or PNG, or does not match its bytes."""

    http_status = 415
    code = "unsupported_frame_type"


class BadFrameMetadata(BadFrame):
    """``X-Frame-Metadata`` is malformed or names a key the site does not let leave."""

    code = "bad_metadata"


class ShuttingDown(ApplianceError):
    """The appliance is stopping and takes no new frame; try again once it is back."""

    retryable = True
    http_status = 503
    code = "shutting_down"


def error_summary(exc: BaseException) -> str:
    """One line for logs and ``/v1/status``: ``Type: message``, at most 300 characters."""
    message = " ".join(str(exc).split())
    summary = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return summary if len(summary) <= _SUMMARY_CHARS else summary[: _SUMMARY_CHARS - 3] + "..."
