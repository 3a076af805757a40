"""Typed errors of the appliance package.  The class tells the caller whether to retry."""

from __future__ import annotations

__all__ = [
    "ApplianceError",
    "BadFrame",
    "BadFrameMetadata",
    "ConfigError",
    "ModelLoadError",
    "RuntimeUnavailable",
    "error_summary",
]

_SUMMARY_CHARS = 300


class ApplianceError(Exception):
    """Root of every error raised by the appliance package."""

    retryable: bool = False
    user_facing: bool = True


class ConfigError(ApplianceError):
    """The site configuration is invalid; the message lists every problem with its path."""


class RuntimeUnavailable(ApplianceError):
    """An inference runtime's library is missing here; the runtime is reported and skipped."""


class ModelLoadError(ApplianceError):
    """A model file is missing, does not match its pin, or the runtime cannot load it."""


class BadFrame(ApplianceError):
    """A frame cannot be decoded or is out of bounds (empty, oversize, wrong type)."""


class BadFrameMetadata(BadFrame):
    """``X-Frame-Metadata`` is malformed or names a key the site does not let leave."""


def error_summary(exc: BaseException) -> str:
    """One line for logs and ``/v1/status``: ``Type: message``, at most 300 characters."""
    message = " ".join(str(exc).split())
    summary = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return summary if len(summary) <= _SUMMARY_CHARS else summary[: _SUMMARY_CHARS - 3] + "..."
