"""Figures as short text for the dashboard and ``yardlink appliance status``: pure.

Every signal is readable without colour: a bar also shows its percentage, an
alert its severity word, an SLA violation a ``!`` mark.
"""

from __future__ import annotations

import time

__all__ = ["age", "bar", "bits_rate", "human_bytes", "duration", "since"]

_UNITS = ("B", "kB", "MB", "GB", "TB")


def human_bytes(value: float | None) -> str:
    if value is None:
        return "?"
    size, unit = float(value), 0
    while abs(size) >= 1000 and unit < len(_UNITS) - 1:
        size, unit = size / 1000, unit + 1
    return f"{size:.0f} {_UNITS[unit]}" if unit == 0 else f"{size:.1f} {_UNITS[unit]}"


def bits_rate(bps: float | None) -> str:
    if bps is None:
        return "?"
    for limit, unit in ((1e9, "Gbit/s"), (1e6, "Mbit/s"), (1e3, "kbit/s")):
        if bps >= limit:
            return f"{bps / limit:.1f} {unit}"
    return f"{bps:.0f} bit/s"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def age(seconds: float | None) -> str:
    """An oldest-record age: ``-`` for an empty class."""
    return "-" if not seconds else duration(seconds)


def since(epoch: float | None, now: float | None = None) -> str:
    if epoch is None:
        return "never"
    return f"{duration((now if now is not None else time.time()) - epoch)} ago"


def bar(fraction: float | None, width: int = 10) -> str:
    """``[###.......]  5%``: filled cells are ``#``, so it reads on any terminal."""
    if fraction is None:
        return "[" + "?" * width + "]   ?"
    fraction = min(1.0, max(0.0, fraction))
    filled = round(fraction * width)
    if fraction > 0 and filled == 0:
        filled = 1  # something is there: show one cell
    percent = "<1%" if 0 < fraction < 0.01 else f"{fraction * 100:3.0f}%"
    return "[" + "#" * filled + "." * (width - filled) + f"] {percent:>4}"
