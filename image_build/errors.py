"""Typed errors of the image builder and installer, rooted at ``ImageError``.

A refused bundle is never retried as is (``retryable = False``): the field
engineer needs another bundle.  ``check`` names what refused it, for the
one-line message of the CLI and for tests.
"""

from __future__ import annotations

__all__ = [
    "BuildError",
    "BundleRefused",
    "ImageError",
    "InstallError",
    "InstallReverted",
]


class ImageError(Exception):
    """Root of every error raised by ``image_build``."""

    retryable: bool = False
    user_facing: bool = True


class BuildError(ImageError):
    """A bundle could not be built (a wheel not downloadable, a model missing, a bad key)."""


class BundleRefused(ImageError):
    """A bundle failed verification: nothing of it was written."""

    def __init__(self, check: str, detail: str) -> None:
        super().__init__(f"bundle refused ({check}): {detail}")
        self.check = check


class InstallError(ImageError):
    """An install could not complete (disk, venv, service); the running slot is unchanged."""


class InstallReverted(ImageError):
    """The new slot did not become healthy in time: the previous slot serves again."""
