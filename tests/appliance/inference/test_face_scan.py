"""The face task's scan inputs: made cheaply, and exactly as before."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

from appliance.inference import blazeface
from appliance.inference.blazeface import Halvings, shrink
from appliance.inference.face_scan import iter_scan_inputs, scan_windows
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
