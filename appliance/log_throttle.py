"""At most one log line per key and interval, counting the lines it held back.

An error that repeats on every frame (a model failing on each one) must be
told to the technician, but not at the frame rate::

    throttle = LogThrottle(60.0)
    suppressed = throttle.admit("gate_ocr")
    if suppressed is not None:  # first one, or the interval has passed
        log.error("... (%d more since the last line)", suppressed)

No I/O and no timer: the clock is injected, and held-back repeats are reported
with the next line that is let through.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LogThrottle"]


@dataclass(slots=True)
class _Window:
    logged_at: float
    suppressed: int = 0


class LogThrottle:
    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if interval_s < 0:
            raise ValueError(f"interval must be >= 0, got {interval_s}")
        self._interval_s = interval_s
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    @property
    def interval_s(self) -> float:
        return self._interval_s

    def admit(self, key: str) -> int | None:
        """None: do not log this one (it is counted).  Else log it: the value is how many
        were held back for ``key`` since the last line let through."""
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now - window.logged_at >= self._interval_s:
            held_back = 0 if window is None else window.suppressed
            self._windows[key] = _Window(now)
            return held_back
        window.suppressed += 1
        return None
