"""Urgent work and the calls that wait for it: bounded, released at once, counted."""

from __future__ import annotations

import threading
import time

from appliance.inference.urgent_work import UrgentRun, UrgentWork


def test_nothing_urgent_means_no_wait() -> None:
    urgent = UrgentWork()
    started = time.monotonic()
    assert urgent.let_pass(5.0) == 0.0
    assert time.monotonic() - started < 0.5
    assert urgent.waits == 0


def test_a_call_waits_until_the_urgent_work_ends() -> None:
    urgent = UrgentWork()
    urgent.begin()
    passed = threading.Event()
    waited: list[float] = []

    def background_call() -> None:
        waited.append(urgent.let_pass(30.0))
        passed.set()

    thread = threading.Thread(target=background_call)
    thread.start()
    assert not passed.wait(0.3)  # held while the urgent work runs
    urgent.end()  # from another thread than the one that waits
    assert passed.wait(5.0)
    thread.join()
    assert 0.3 <= waited[0] < 5.0
    assert urgent.waits == 1 and urgent.running_now == 0


def test_a_wait_is_bounded_so_a_stream_of_urgent_work_never_stops_the_others() -> None:
    urgent = UrgentWork()
    with urgent.running():
        started = time.monotonic()
        waited = urgent.let_pass(0.2)
        elapsed = time.monotonic() - started
    assert 0.2 <= waited <= elapsed < 2.0
    assert urgent.running_now == 0


def test_overlapping_urgent_runs_hold_calls_until_the_last_ends() -> None:
    urgent = UrgentWork()
    urgent.begin()
    urgent.begin()
    urgent.end()
    assert urgent.running_now == 1
    assert urgent.let_pass(0.1) >= 0.1  # still one running: waited out the bound
    urgent.end()
    assert urgent.let_pass(5.0) == 0.0


def test_a_zero_bound_never_waits() -> None:
    urgent = UrgentWork()
    with urgent.running():
        assert urgent.let_pass(0.0) == 0.0
    assert urgent.waits == 0


def test_an_error_inside_running_still_ends_the_urgent_work() -> None:
    urgent = UrgentWork()
    try:
        with urgent.running():
            raise ValueError("model call failed")
    except ValueError:
        pass
    assert urgent.running_now == 0


def test_an_announced_run_ends_its_urgent_work_once() -> None:
    urgent = UrgentWork()
    announced = UrgentRun(urgent)
    assert urgent.running_now == 1
    announced.starting()
    announced.dropped()  # started: only its own end ends it
    assert urgent.running_now == 1
    announced.end()
    announced.end()
    assert urgent.running_now == 0


def test_an_announced_run_dropped_before_it_started_ends_at_once() -> None:
    urgent = UrgentWork()
    announced = UrgentRun(urgent)
    announced.dropped()
    assert urgent.running_now == 0
    announced.end()  # the worker ran it after all (a race with the cancel): no double end
    assert urgent.running_now == 0
