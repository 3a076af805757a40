"""The CPU class a device's model figures belong to (architecture, INT8 SIMD, cores)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["INT8_SIMD", "cpu_info", "device_class"]

_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp", "sve")
INT8_SIMD = ("vnni", "dotprod")  # classes with int8 dot-product instructions


def cpu_info() -> tuple[str, set[str]]:
    """The CPU's model name and feature flags, from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown", set()
    model, flags = "unknown", set[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and model == "unknown":
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, flags


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def device_class() -> dict[str, Any]:
    """The CPU class the figures belong to: architecture, the SIMD that matters for INT8."""
    model, flags = cpu_info()
    arch = platform.machine()
    if {"avx512_vnni", "avx_vnni", "amx_int8"} & flags:
        simd = "vnni"
    elif "avx2" in flags:
        simd = "avx2"
    elif "asimddp" in flags:
        simd = "dotprod"
    elif "asimd" in flags:
        simd = "neon"
    else:
        simd = "baseline"
    return {
        "class": f"{arch}-{simd}-{_cores()}c",
        "arch": arch,
        "simd": simd,
        "cpu_model": model,
        "cpus": _cores(),
        "simd_flags": sorted(flags & set(_CPU_FLAGS)),
    }
