"""Real faces for the synthetic yard camera: drivers in cabs, people at the gate.

The faces come from photographs that ship inside scikit-image (no download):
Eileen Collins in ``skimage.data.astronaut``, the photographer in
``skimage.data.camera``, and the 100 faces of ``skimage.data.lfw_subset`` (Labeled
Faces in the Wild, 25 x 25 crops).  Each is cut at its face box, known here, and
pasted at a known box, so a test can check that the pixels there were blurred.
"""

from __future__ import annotations

import functools
import random
from typing import Any

import cv2
import numpy as np

from appliance.errors import RuntimeUnavailable

__all__ = ["FACE_SIZE_RANGE", "face_photo", "face_sources"]

Image = np.ndarray[Any, Any]

FACE_SIZE_RANGE = (72, 104)  # pixels of a face's side in a 1280 x 720 frame, scaled with width

# (x, y, w, h) of the face in each whole photograph
_ASTRONAUT_FACE = (173, 73, 103, 103)
_CAMERAMAN_FACE = (180, 121, 84, 84)
_LFW_FACES = 100  # the first 100 crops of lfw_subset are faces, the rest are not


@functools.cache
def face_sources() -> tuple[tuple[str, Image], ...]:
    """(name, BGR face crop) of every face photograph, loaded once."""
    try:
        from skimage import data
    except ImportError as exc:
        raise RuntimeUnavailable(
            "the synthetic camera's faces come from scikit-image's sample photographs:"
            " install the dev extra, or make the camera with faces=False"
        ) from exc

    crops: list[tuple[str, Image]] = []
    x, y, w, h = _ASTRONAUT_FACE
    astronaut_rgb = data.astronaut()  # type: ignore[no-untyped-call]
    astronaut = cv2.cvtColor(astronaut_rgb, cv2.COLOR_RGB2BGR)
    crops.append(("astronaut", np.ascontiguousarray(astronaut[y : y + h, x : x + w])))
    x, y, w, h = _CAMERAMAN_FACE
    cameraman_grey = data.camera()  # type: ignore[no-untyped-call]
    cameraman = cv2.cvtColor(cameraman_grey, cv2.COLOR_GRAY2BGR)
    crops.append(("cameraman", np.ascontiguousarray(cameraman[y : y + h, x : x + w])))
    lfw = data.lfw_subset()  # type: ignore[no-untyped-call]
    for index in range(_LFW_FACES):
        grey = np.clip(lfw[index] * 255.0, 0, 255).astype(np.uint8)
        crops.append((f"lfw-{index}", cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)))
    return tuple(crops)


def face_photo(rng: random.Random, size: int) -> tuple[str, Image]:
    """A face photograph chosen by ``rng``, resized to ``size`` x ``size``."""
    name, crop = rng.choice(face_sources())
    return name, cv2.resize(crop, (size, size), interpolation=cv2.INTER_CUBIC)
