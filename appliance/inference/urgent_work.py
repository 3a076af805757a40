"""Model calls that go first on cores the tasks share: urgent work, and calls that wait.

On a 2-core gateway the face task (~11 ms a frame alone, on both cores) and a new
scene's gate OCR (~32 ms alone) start on the same frame at the same moment.  Run
side by side, each gets half the cores, so the short one takes about as long as
the long one.  Run short first, the face record is durable in about its time alone
and gate OCR ends a few ms later than it would have (docs/INFERENCE.md, "Face reads
first").

    URGENT = UrgentWork()             # one per process: the cores are the machine's
    run = UrgentRun()                 # the pipeline, before it queues the face task's run
    run.starting(); ...; run.end()    # on the run's thread (``dropped()``: never started)
    URGENT.let_pass(max_wait_s=0.025) # gate OCR, before its read and each model call
    with URGENT.running(): ...        # urgent work outside the pipeline (a benchmark)

``let_pass`` returns at once when nothing urgent runs, else when the urgent work is
done or after ``max_wait_s``, whichever is first: a wait is bounded per call, so a
stream of urgent work slows the other calls, never stops them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["URGENT", "UrgentRun", "UrgentWork"]


class UrgentWork:
    """How many urgent runs are in flight, and a wait for none to be."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._running = 0
        self.waits = 0  # calls that found urgent work running and waited
        self.waited_s = 0.0  # their time waiting, in all

    @property
    def running_now(self) -> int:
        return self._running

    def begin(self) -> None:
        """Urgent work starts (or is about to: a frame's run submitted to its thread)."""
        with self._changed:
            self._running += 1

    def end(self) -> None:
        """Urgent work that ``begin`` announced is done (once per ``begin``, any thread)."""
        with self._changed:
            self._running -= 1
            if self._running == 0:
                self._changed.notify_all()

    @contextmanager
    def running(self) -> Iterator[None]:
        """Urgent work runs inside this block (on any thread; blocks may nest or overlap)."""
        self.begin()
        try:
            yield
        finally:
            self.end()

    def let_pass(self, max_wait_s: float) -> float:
        """Wait while urgent work runs, at most ``max_wait_s``; returns the seconds waited."""
        if max_wait_s <= 0 or self._running == 0:  # the common case takes no lock
            return 0.0
        started = time.monotonic()
        with self._changed:
            if self._running == 0:
                return 0.0
            self._changed.wait_for(lambda: self._running == 0, timeout=max_wait_s)
            waited = time.monotonic() - started
            self.waits += 1
            self.waited_s += waited
        return waited


URGENT = UrgentWork()


class UrgentRun:
    """One urgent run announced before it is queued (``begin`` at construction) that ends
    its urgent work exactly once: when it has run (``end`` from its thread), or when it
    is dropped from the queue before it started (``dropped``: a cancelled frame's run
    never runs, and must not hold the other tasks' calls for good)."""

    def __init__(self, urgent: UrgentWork = URGENT) -> None:
        self._urgent = urgent
        self._lock = threading.Lock()
        self._started = self._ended = False
        urgent.begin()

    def starting(self) -> None:
        """The run starts (on its thread): from now only ``end`` ends it."""
        with self._lock:
            self._started = True

    def end(self) -> None:
        """The run is over (or will never be): its urgent work ends, once."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
        self._urgent.end()

    def dropped(self) -> None:
        """The run was taken off its queue: ends it unless it already started."""
        with self._lock:
            if self._started:
                return
        self.end()
