"""The face task's scan inputs: made cheaply, and exactly as before."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
from pydantic import ValidationError
from skimage import data

from appliance.inference import blazeface
from appliance.inference.blazeface import INPUT_SIZE, Halvings, shrink
from appliance.inference.face_anonymize import FaceAnonymizeTask
from appliance.inference.face_scan import iter_scan_inputs, scan_windows
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


def test_a_scan_region_limits_the_scans_to_it() -> None:
    """The lower 55% of a 1280x720 frame (a gate's cab windows and footway): the 1/2
    scan is one 640x208 window from row 162 of the 640x360 scan, the 1/4 scan from row
    81; 185k input pixels with the whole frame's (360k without the region)."""
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
