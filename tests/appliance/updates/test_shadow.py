"""The shadow window's verdict (pure): when it closes, and each reason to roll back."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from appliance.inference.results import Detection, TaskResult
from appliance.updates.settings import UpdateSettings
from appliance.updates.shadow import ShadowWindow

SETTINGS = UpdateSettings(shadow_frames=10, shadow_min_frames=3, shadow_max_s=60)


def _result(ms: float = 80.0, *, value: str = "MSCU1234565", confidence: float = 0.9) -> TaskResult:
    found = [Detection("container_code", value, confidence, True, (0, 0, 10, 10))]
    return TaskResult("gate_ocr", "pp-ocrv4", "v", found, ms)


def _window(**kw: object) -> ShadowWindow:
    return ShadowWindow(SETTINGS.model_copy(update=kw), sla_ms=300.0, started_at=0.0)


def test_commit_after_enough_matching_frames():
    window = _window()
    for _ in range(9):
        window.add(_result(), _result())
    assert window.verdict(now=1.0) is None  # still open
    window.add(_result(), _result())
    verdict = window.verdict(now=1.0)
    assert verdict is not None and verdict.commit
    assert verdict.evidence["frames"] == 10 and verdict.evidence["agreement"] == 1.0


def test_time_limit_needs_the_minimum_of_frames():
    window = _window()
    window.add(_result(), _result())
    assert window.verdict(now=120.0) is None  # two frames prove nothing: keep waiting
    window.add(_result(), _result())
    window.add(_result(), _result())
    verdict = window.verdict(now=120.0)
    assert verdict is not None and verdict.commit


@pytest.mark.parametrize(
    ("new", "reason"),
    [
        (None, "error rate"),
        (_result(ms=900.0), "p99"),
        (_result(value="MSCU0000000"), "agreement"),
        (_result(confidence=0.5), "confidence"),
    ],
    ids=["errors", "slow", "disagrees", "less-sure"],
)
def test_each_regression_rolls_back(new: TaskResult | None, reason: str):
    window = _window()
    for _ in range(10):
        window.add(new, _result())
    verdict = window.verdict(now=1.0)
    assert verdict is not None and not verdict.commit
    assert reason in verdict.reason


def test_p99_is_the_tail_not_the_mean():
    window = _window(shadow_frames=100)
    for index in range(100):
        window.add(_result(ms=2000.0 if index < 2 else 50.0), _result())
    verdict = window.verdict(now=1.0)
    assert verdict is not None and not verdict.commit and "p99" in verdict.reason


async def test_the_backlog_defers_comparisons_only_until_the_time_limit():
    from typing import Any, cast

    from appliance.updates.shadow import ShadowRun

    now = [0.0]
    window = _window(shadow_frames=2)
    run = ShadowRun(
        "gate_ocr",
        cast(Any, "old model"),
        window,
        lambda task, frame: _result(),  # the old model's run, without a model
        clock=lambda: now[0],
        behind=lambda: True,  # frames always waiting
    )
    frame = cast(Any, "frame")
    run.tap("gate_ocr", frame, _result(), None)
    run.tap("face_anonymize", frame, _result(), None)  # another task: ignored
    assert (window.compared, window.skipped) == (0, 1)
    now[0] = SETTINGS.shadow_max_s  # overdue: compare in spite of the backlog
    for _ in range(2):
        run.tap("gate_ocr", frame, _result(), None)
        await asyncio.sleep(0.05)
    verdict = await run.verdict(poll_s=0.01)
    assert verdict.commit and window.compared == 2
    await run.close()


async def test_the_old_model_reruns_at_a_lower_cpu_priority_than_the_serving_one():
    """(Linux, where the appliance runs: niceness is per thread.)"""
    from typing import Any, cast

    from appliance.updates.shadow import ShadowRun

    def priority_of_this_thread(task: object, frame: object) -> TaskResult:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return _result()

    seen: list[int] = []
    serving = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    window = _window(shadow_frames=1)
    run = ShadowRun("gate_ocr", cast(Any, "old"), window, priority_of_this_thread, nice=7)
    run.tap("gate_ocr", cast(Any, "frame"), _result(), None)
    assert (await run.verdict(poll_s=0.01)).commit
    await run.close()
    assert seen == [min(19, serving + 7)]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == serving  # ours kept
