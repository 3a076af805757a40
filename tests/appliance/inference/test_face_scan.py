"""The face task's scan inputs: made cheaply, and exactly as before."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from skimage import data

from appliance.inference import blazeface
from appliance.inference.blazeface import INPUT_SIZE, Halvings, Letterbox, letterbox, shrink
from appliance.inference.face_anonymize import FaceAnonymizeTask
from appliance.inference.face_scan import iter_scan_inputs, scan_overlap, scan_windows
from appliance.inference.settings import FaceAnonymizeSettings
from appliance.sources.synthetic import SyntheticYardCamera

Image = np.ndarray[Any, Any]


@pytest.fixture(scope="module")
def frame() -> Image:
    return SyntheticYardCamera(7).frame(0).image_bgr


@pytest.mark.parametrize("size", [(640, 360), (320, 180), (160, 90), (455, 256), (128, 72)])
def test_shrinking_from_shared_halvings_equals_shrinking_the_frame(
    frame: Image, size: tuple[int, int]
) -> None:
    halvings = Halvings(frame)
    halvings.shrink((320, 180))  # a level made for another input first
    assert np.array_equal(halvings.shrink(size), shrink(frame, size))


def test_a_frame_is_halved_once_however_many_scans_use_the_halving(
    frame: Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 1/2 and 1/4 scans of a 1280x720 frame: the 1/4 comes from the 1/2, not from
    the frame again; the inputs are those of each scale shrunk from the frame itself."""
    windows = scan_windows(720, 1280, [0.05, 0.1])
    assert {w.scale for w in windows} == {0.5, 0.25}
    full_size_resizes = []
    resize = cv2.resize

    def counting(image: Image, *args: Any, **kwargs: Any) -> Image:
        if image.shape[:2] == frame.shape[:2]:
            full_size_resizes.append(image.shape)
        return resize(image, *args, **kwargs)

    monkeypatch.setattr(cv2, "resize", counting)
    inputs = list(iter_scan_inputs(frame, windows))
    monkeypatch.undo()
    assert len(full_size_resizes) == 1
    for window, tensor in inputs:
        size = (round(1280 * window.scale), round(720 * window.scale))
        expected = blazeface.to_unit_rgb(shrink(frame, size))
        part = expected[window.y : window.y + window.height, window.x : window.x + window.width]
        assert np.array_equal(tensor[0, : part.shape[0], : part.shape[1]], part)


def test_halvings_of_another_image_are_refused(frame: Image) -> None:
    windows = scan_windows(720, 1280, [0.05])
    with pytest.raises(ValueError, match="halvings"):
        list(iter_scan_inputs(frame, windows, halvings=Halvings(frame.copy())))


def test_an_odd_side_is_never_halved(frame: Image) -> None:
    odd = frame[:719, :1279]
    image, factor = Halvings(odd).for_size((320, 180))
    assert factor == 1 and image is odd
    with pytest.raises(ValueError, match="halved exactly"):
        Halvings(odd).level(1)


def test_the_fine_scan_overlaps_by_the_faces_only_it_must_find() -> None:
    """1280x720: the 1/2 scan's two windows overlap by 64 input pixels (128 frame
    pixels): larger faces are the 1/4 scan's too, whole in its one window.  337k input
    pixels a frame with the whole frame's 128x128 (360k with a 128 px overlap)."""
    windows = scan_windows(720, 1280, [0.05, 0.1])
    fine = [w for w in windows if w.scale == 0.5]
    assert scan_overlap(0.5, 0.25) == 64 and scan_overlap(0.25, None) == INPUT_SIZE
    assert [(w.x, w.width) for w in fine] == [(0, 352), (288, 352)]
    assert fine[0].x + fine[0].width - fine[1].x == 64
    assert sum(w.width * w.height for w in windows) + INPUT_SIZE**2 == 336_896


@given(
    height=st.integers(200, 1200),
    width=st.integers(200, 2400),
    fractions=st.lists(st.floats(0.02, 0.5), min_size=1, max_size=3),
    start=st.floats(0.0, 1.0),
)
def test_every_face_a_scan_alone_must_find_lies_whole_in_one_of_its_windows(
    height: int, width: int, fractions: list[float], start: float
) -> None:
    windows = scan_windows(height, width, fractions)
    scales = sorted({w.scale for w in windows}, reverse=True)
    for i, scale in enumerate(scales):
        coarser = scales[i + 1] if i + 1 < len(scales) else None
        mine = [w for w in windows if w.scale == scale]
        horizontal = all(w.y == 0 for w in mine)
        length = max(round(width * scale), 1) if horizontal else max(round(height * scale), 1)
        face = min(scan_overlap(scale, coarser), length)
        first = round(start * (length - face))
        spans = [(w.x, w.x + w.width) if horizontal else (w.y, w.y + w.height) for w in mine]
        assert any(a <= first and first + face <= b for a, b in spans)


def test_the_whole_frame_comes_from_the_first_halving(
    face_task: FaceAnonymizeTask, frame: Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All of a 1280x720 frame's inputs (two scans, the whole frame) cost one resize of
    the full frame: the whole frame is letterboxed from its first halving, as from
    the 1/2 JPEG decode when the face task runs alone."""
    full_size_resizes = []
    resize = cv2.resize

    def counting(image: Image, *args: Any, **kwargs: Any) -> Image:
        if image.shape[:2] == frame.shape[:2]:
            full_size_resizes.append(image.shape)
        return resize(image, *args, **kwargs)

    monkeypatch.setattr(cv2, "resize", counting)
    inputs = list(face_task._inputs(frame))
    monkeypatch.undo()
    assert len(full_size_resizes) == 1
    region, tensor, fit = inputs[-1]
    assert region == (0, 0, 1280, 720) and tensor.shape == (1, INPUT_SIZE, INPUT_SIZE, 3)
    expected, expected_fit = letterbox(cv2.resize(frame, (640, 360), interpolation=cv2.INTER_AREA))
    assert np.array_equal(tensor, expected)
    assert fit == Letterbox(expected_fit.scale / 2, expected_fit.pad_x, expected_fit.pad_y)


def test_a_face_across_the_fine_scans_seam_is_found(
    face_task: FaceAnonymizeTask, frame: Image
) -> None:
    """A gate-sized face (96 px) over the 1/2 scan's window seam (frame x 576-704),
    where only the overlap holds it whole."""
    face = cv2.resize(data.astronaut()[30:230, 150:330], (96, 96))  # type: ignore[no-untyped-call]
    image = frame.copy()
    for x in (560, 592, 624):
        image[500:596, x : x + 96] = cv2.cvtColor(face, cv2.COLOR_RGB2BGR)
        boxes = [d.box for d in face_task.run(image).detections]
        assert any(
            abs(bx + bw / 2 - (x + 48)) < 24 and abs(by + bh / 2 - 548) < 24
            for bx, by, bw, bh in boxes
        ), (x, boxes)
        image[500:596, x : x + 96] = frame[500:596, x : x + 96]


def test_a_scan_region_limits_the_scans_to_it() -> None:
    """The lower 55% of a 1280x720 frame (a gate's cab windows and footway): the 1/2
    scan is one 640x208 window from row 162 of the 640x360 scan, the 1/4 scan from row
    81; 185k input pixels with the whole frame's (337k without the region)."""
    windows = scan_windows(720, 1280, [0.05, 0.1], (0.0, 0.45, 1.0, 0.55))
    assert [(w.scale, w.x, w.y, w.width, w.height) for w in windows] == [
        (0.5, 0, 162, 640, 208),
        (0.25, 0, 81, 320, 112),
    ]
    assert sum(w.width * w.height for w in windows) + INPUT_SIZE**2 == 185_344


@pytest.mark.parametrize("region", [(0.5, 0.0, 0.6, 1.0), (0.0, 0.5, 1.0, 0.6), (-0.1, 0, 1, 1)])
def test_a_scan_region_must_lie_inside_the_frame(region: tuple[float, ...]) -> None:
    with pytest.raises(ValidationError, match="scan_region"):
        FaceAnonymizeSettings(scan_region=region)  # type: ignore[arg-type]


def test_with_a_scan_region_small_faces_are_found_only_inside_it(
    face_task: FaceAnonymizeTask, frame: Image
) -> None:
    """The region is a privacy trade a site opts into: a gate-sized face above it is
    not found (and would leave in clear); inside it, it is found as without one."""
    banded = FaceAnonymizeTask(
        face_task.models, FaceAnonymizeSettings(scan_region=(0.0, 0.45, 1.0, 0.55))
    )
    face = cv2.cvtColor(
        cv2.resize(data.astronaut()[30:230, 150:330], (96, 96)),  # type: ignore[no-untyped-call]
        cv2.COLOR_RGB2BGR,
    )
    try:
        for y, inside in ((480, True), (120, False)):
            image = frame.copy()
            image[y : y + 96, 600:696] = face
            for task, expected in ((face_task, True), (banded, inside)):
                boxes = [d.box for d in task.run(image).detections]
                found = any(
                    abs(bx + bw / 2 - 648) < 24 and abs(by + bh / 2 - (y + 48)) < 24
                    for bx, by, bw, bh in boxes
                )
                assert found == expected, (y, task.settings.scan_region, boxes)
    finally:
        banded.close()
