"""Target platforms of a bundle and the pip tags that select their wheels.

A gateway runs Debian 12 (glibc 2.36, CPython 3.11), so a wheel built for any
manylinux from glibc 2.17 to 2.36 runs there; pip is given every one of those
tags explicitly because it does not widen a ``--platform`` by itself.
"""

from __future__ import annotations

import platform as _host
from enum import StrEnum

from image_build.errors import BuildError

__all__ = ["PYTHON_VERSION", "Platform", "host_platform", "pip_platform_tags"]

PYTHON_VERSION = "3.11"  # CPython of the gateway (Debian 12)
_GLIBC_MINOR_RANGE = range(36, 16, -1)  # manylinux_2_36 ... manylinux_2_17


class Platform(StrEnum):
    X86_64 = "x86_64"
    AARCH64 = "aarch64"

    @classmethod
    def parse(cls, name: str) -> Platform:
        aliases = {"amd64": "x86_64", "arm64": "aarch64"}
        try:
            return cls(aliases.get(name.lower(), name.lower()))
        except ValueError:
            raise BuildError(
                f"unknown platform {name!r}: choose one of {', '.join(p.value for p in cls)}"
            ) from None


def host_platform() -> Platform:
    return Platform.parse(_host.machine())


def pip_platform_tags(target: Platform) -> list[str]:
    tags = [f"manylinux_2_{minor}_{target.value}" for minor in _GLIBC_MINOR_RANGE]
    return [*tags, f"manylinux2014_{target.value}"]
