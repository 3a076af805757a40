"""Raw sampling policy: which frames leave the site (face-blurred) without being asked.

Pure state machine: ``decide(min_confidence, now)`` -> bool.  One frame in
``every_n_frames``, plus one in ``low_confidence_every_n`` of the frames whose
lowest detection confidence is under ``low_confidence_below``, never more than
``max_per_hour`` in any rolling hour.
"""

from __future__ import annotations

from collections import deque

from appliance.config import SamplingSettings

__all__ = ["SamplingPolicy"]


class SamplingPolicy:
    def __init__(self, settings: SamplingSettings) -> None:
        self._settings = settings
        self._frames = 0
        self._low_confidence_frames = 0
        self._taken: deque[float] = deque()
        self.rate_limited = 0

    def decide(self, min_confidence: float | None, now: float) -> bool:
        settings = self._settings
        self._frames += 1
        wanted = settings.every_n_frames > 0 and self._frames % settings.every_n_frames == 0
        if min_confidence is not None and min_confidence < settings.low_confidence_below:
            self._low_confidence_frames += 1
            every = settings.low_confidence_every_n
            if every > 0 and self._low_confidence_frames % every == 0:
                wanted = True
        if not wanted:
            return False
        while self._taken and self._taken[0] <= now - 3600.0:
            self._taken.popleft()
        if len(self._taken) >= settings.max_per_hour:
            self.rate_limited += 1
            return False
        self._taken.append(now)
        return True
