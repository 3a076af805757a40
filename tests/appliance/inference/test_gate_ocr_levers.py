"""The gate OCR speed levers on the real models: the lane's region, unchanged frames, the
check digit's box read first, recognition calls split by width."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from appliance.inference.eval_set import EVAL_SEED, load_eval_set, write_eval_set
from appliance.inference.gate_ocr import DET_MODEL, REC_MODEL, GateOcrTask, load_gate_ocr
from appliance.inference.settings import GateOcrSettings
from appliance.inference.text_detection import crop_text
from appliance.sources.synthetic import SyntheticYardCamera
from tests.appliance.inference.conftest import MODELS_DIR

TODAY = {
    "det_max_side": 640,
    "check_digit_interior_first": False,
    "skip_unchanged_max_change": None,
    "rec_min_width": 320,
    "rec_width_spread": 0.0,
}


def _task(**settings: object) -> GateOcrTask:
    return load_gate_ocr(
        GateOcrSettings(**settings),  # type: ignore[arg-type]
        MODELS_DIR / DET_MODEL,
        MODELS_DIR / REC_MODEL,
    )


@pytest.fixture(scope="module")
def today() -> Iterator[GateOcrTask]:
    yield _task(**TODAY)


def _found(task: GateOcrTask, image: np.ndarray) -> set[tuple[str, str, bool | None]]:  # type: ignore[type-arg]
    return {(d.kind, d.value, d.valid) for d in task.run(image).detections if d.kind != "text"}


def test_the_lane_region_reads_only_inside_it_and_reports_frame_pixels(
    today: GateOcrTask,
) -> None:
    camera = SyntheticYardCamera(seed=12, difficulty="clean", plate_probability=1.0)
    upper = _task(**{**TODAY, "det_regions": [(0.0, 0.0, 1.0, 0.62)]})  # the container's band
    for frame in camera.frames(3):
        code, plate = frame.truths
        everything = {d.kind: d for d in today.run(frame.image_bgr).detections}
        in_region = {d.kind: d for d in upper.run(frame.image_bgr).detections}
        assert in_region["container_code"].value == code.value
        assert "plate" not in in_region  # below the region: never looked at
        assert everything["plate"].value == plate.value
        x, y, w, h = in_region["container_code"].box
        fx, fy, fw, fh = everything["container_code"].box
        assert abs(x - fx) <= 6 and abs(y - fy) <= 6 and abs(w - fw) <= 12 and abs(h - fh) <= 12


def test_two_lane_bands_read_codes_and_plates_in_frame_pixels_for_fewer_detector_pixels(
    today: GateOcrTask,
) -> None:
    bands = [(0.0, 0.0, 0.8, 0.5454), (0.15, 0.7278, 0.7, 0.2722)]  # code band, plate band
    lanes = _task(**{**TODAY, "det_regions": bands})
    shapes: list[tuple[int, ...]] = []
    camera = SyntheticYardCamera(seed=14, difficulty="clean", plate_probability=1.0)
    for frame in camera.frames(3):
        everything = {d.kind: d for d in today.run(frame.image_bgr).detections}
        in_lanes = {d.kind: d for d in lanes.run(frame.image_bgr).detections}
        for truth in frame.truths:
            assert in_lanes[truth.kind].value == truth.value
            # the plate's band starts at y 524: a box found there but reported in band
            # pixels would sit ~524 px too high; frame pixels match the whole frame's read
            bx, by, bw, bh = in_lanes[truth.kind].box
            fx, fy, fw, fh = everything[truth.kind].box
            # (the bands' detector maps are rounded to 32 px differently: sizes move a little)
            assert abs(bx - fx) <= 8 and abs(by - fy) <= 8
            assert abs(bw - fw) <= 24 and abs(bh - fh) <= 24
        shapes += [
            feeds["x"].shape
            for model, feeds in lanes.model_calls(frame.image_bgr)
            if model is lanes.det
        ]
    # each band at the whole frame's scale (640x352 for 1280x720): 512x192 and 448x96
    assert set(shapes) == {(1, 3, 192, 512), (1, 3, 96, 448)}


def test_a_region_outside_the_frame_or_overlapping_another_is_refused() -> None:
    with pytest.raises(ValidationError, match="inside the frame"):
        GateOcrSettings(det_regions=[(0.5, 0.0, 0.6, 1.0)])
    with pytest.raises(ValidationError, match="width, height > 0"):
        GateOcrSettings(det_regions=[(0.0, 0.0, 0.0, 1.0)])
    with pytest.raises(ValidationError, match="must not overlap"):
        GateOcrSettings(det_regions=[(0.0, 0.0, 0.5, 0.5), (0.4, 0.4, 0.5, 0.5)])
    task = _task(det_regions=[(0.25, 0.5, 0.5, 0.5), (0.0, 0.0, 1.0, 0.25)])
    assert task.regions_pixels(720, 1280) == [(320, 360, 640, 360), (0, 0, 1280, 180)]
    assert _task().regions_pixels(720, 1280) == [(0, 0, 1280, 720)]


def test_an_unchanged_scene_is_answered_again_and_a_new_one_is_read() -> None:
    task = _task(skip_unchanged_max_change=4.0)
    assert task.unchanged is not None
    camera = SyntheticYardCamera(seed=13, difficulty="clean")
    first, second = camera.frames(2)
    read = task.run(first.image_bgr)
    noisy = first.image_bgr + np.random.default_rng(0).normal(0, 2, first.image_bgr.shape)
    again = task.run(np.clip(noisy, 0, 255).astype(np.uint8))
    assert task.unchanged.hits == 1
    assert again.detections == read.detections
    assert ("container_code", first.truths[0].value, first.truths[0].valid) in {
        (d.kind, d.value, d.valid) for d in again.detections
    }
    new = {(d.kind, d.value) for d in task.run(second.image_bgr).detections}
    assert task.unchanged.hits == 1
    assert ("container_code", second.truths[0].value) in new


def test_reading_the_check_digit_box_first_gives_the_same_codes(today: GateOcrTask) -> None:
    """Valid and invalid check digits, single-line and stacked codes."""
    interior_first = _task(**{**TODAY, "check_digit_interior_first": True})
    camera = SyntheticYardCamera(
        seed=14, difficulty="varied", invalid_fraction=0.5, stacked_fraction=0.3
    )
    same = right = 0
    frames = camera.frames(6)
    for frame in frames:
        code = frame.truths[0]
        found = _found(interior_first, frame.image_bgr)
        same += found == _found(today, frame.image_bgr)
        right += ("container_code", code.value, code.valid) in found
    assert right >= 5 and same >= 5


def test_recognition_split_by_width_keeps_each_crop_with_its_text(today: GateOcrTask) -> None:
    split = _task(**{**TODAY, "rec_min_width": 8, "rec_width_spread": 1.2, "rec_batch_size": 3})
    frame = SyntheticYardCamera(seed=15, difficulty="clean", plate_probability=1.0).frame(0)
    boxes = today.detect(frame.image_bgr)
    crops = [crop_text(frame.image_bgr, box) for box in boxes]
    crops = crops + [crop[:, : max(8, crop.shape[1] // 3)] for crop in crops]  # narrow ones
    batches = split._rec_batches(crops, 8)
    assert sorted(i for chunk, _ in batches for i in chunk) == list(range(len(crops)))
    for chunk, batch in batches:
        ratios = [crops[i].shape[1] / crops[i].shape[0] for i in chunk]
        assert len(chunk) <= 3 and max(ratios) <= 1.2 * max(ratios[0], 1.0)
        assert batch.shape[0] == len(chunk)
    wide = [t.text for t in today.recognize(crops)]
    narrow = [t.text for t in split.recognize(crops)]
    assert narrow[: len(boxes)] == wide[: len(boxes)]  # whole boxes read the same


def test_a_task_closed_under_a_frame_still_reads_it(today: GateOcrTask) -> None:
    """A model switch closes the old task while a frame may still be in its ``run``:
    the frame's calls finish on its own thread instead of failing (a lost frame)."""
    two = _task(parallel_calls=2)
    frame = SyntheticYardCamera(seed=15, difficulty="varied", plate_probability=1.0).frame(0)
    expected = two.run(frame.image_bgr).detections
    two.close()
    assert two.run(frame.image_bgr).detections == expected


def test_two_call_threads_read_a_batch_in_halves_with_the_same_results(
    today: GateOcrTask,
) -> None:
    one = _task(parallel_calls=1)
    two = _task(parallel_calls=2)
    camera = SyntheticYardCamera(seed=15, difficulty="varied", plate_probability=1.0)
    try:
        for frame in camera.frames(4):
            assert two.run(frame.image_bgr).detections == one.run(frame.image_bgr).detections
            rec_one = [f["x"].shape for m, f in one.model_calls(frame.image_bgr) if m is one.rec]
            rec_two = [f["x"].shape for m, f in two.model_calls(frame.image_bgr) if m is two.rec]
            # the code line and the plate: one batch of 2 on one thread, 2 halves on two
            assert rec_one[0][0] == 2 and [s[0] for s in rec_two[:2]] == [1, 1]
            assert rec_two[0][1:] == rec_two[1][1:] == rec_one[0][1:]  # same padded width
        assert any(t.name.startswith("gate-ocr-call") for t in threading.enumerate())
    finally:
        two.close()
        one.close()


def test_the_check_digit_is_read_alone_only_for_a_line_read_without_it(
    tmp_path: Path, gate_ocr: GateOcrTask
) -> None:
    """Eval frame 14's code line reads with its 11 characters: no check digit call; frame
    0's reads as owner and serial only: one call on the box beside it.  Both read right."""
    eval_set = load_eval_set(write_eval_set(tmp_path, 15, EVAL_SEED).directory)
    frames = {frame.index: (frame, jpeg) for frame, jpeg in eval_set.jpegs()}
    for index, calls_wanted in ((14, 0), (0, 1)):
        frame, jpeg = frames[index]
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        digit_calls = [
            feeds
            for model, feeds in gate_ocr.model_calls(image)
            if model is gate_ocr.rec and next(iter(feeds.values())).shape[3] == 96
        ]
        assert len(digit_calls) == calls_wanted
        code = frame.code()
        assert any(
            (d.value, d.valid) == (code.value, code.valid)
            for d in gate_ocr.run(image).detections
            if d.kind == "container_code"
        )
