"""One clock for tests that control time."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FakeClock"]


@dataclass
class FakeClock:
    """A wall clock under the test's control: call it for the time, move ``now`` by hand."""

    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now
