"""The one capped exponential backoff: initial, doubled per failure in a row, capped.

Used by the link monitor (which draws a full-jitter wait below it), the
appliance's task supervisor and its spool watcher.
"""

from __future__ import annotations

__all__ = ["doubling_delay"]


def doubling_delay(failures: int, initial_s: float, max_s: float) -> float:
    """The wait after the ``failures``-th failure in a row (1-based): ``initial_s``,
    doubled for each failure after the first, at most ``max_s``."""
    doublings = min(max(failures - 1, 0), 62)  # 2.0**62 is still a finite float
    return min(max_s, initial_s * 2.0**doublings)
