from __future__ import annotations

import cv2
import numpy as np

from appliance.inference.check_digit import check_digit_candidates, warp_upright


def _container_side(with_box: bool) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    image = np.full((200, 600, 3), (40, 50, 160), np.uint8)
    for x in range(6, 600, 24):  # corrugation
        cv2.line(image, (x, 0), (x, 199), (15, 25, 135), 3)
    cv2.putText(image, "MSCU 305438", (20, 110), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (240,) * 3, 4)
    cv2.putText(image, "3", (360, 110), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (240,) * 3, 4)
    if with_box:
        cv2.rectangle(image, (348, 62), (400, 122), (240,) * 3, 3)
    return image, (15, 70, 320, 50)  # the detector's box around "MSCU 305438"


def test_box_interior_comes_first_without_its_outline() -> None:
    image, prefix = _container_side(with_box=True)
    candidates = check_digit_candidates(image, prefix)
    interior = candidates[0]
    assert interior.shape[0] < 60 and interior.shape[1] < 60
    # the outline (bright, 3 px) is cut away: the interior's border rows are background
    gray = cv2.cvtColor(interior, cv2.COLOR_BGR2GRAY)
    assert gray[0].mean() < 150 and gray[-1].mean() < 150


def test_without_a_box_only_windows_along_the_line() -> None:
    image, prefix = _container_side(with_box=False)
    candidates = check_digit_candidates(image, prefix)
    assert len(candidates) >= 4
    assert {c.shape[0] for c in candidates} == {40}  # 0.8 x the 50 px text height


def test_nothing_to_search_at_the_frame_edge() -> None:
    image, _ = _container_side(with_box=True)
    assert check_digit_candidates(image, (400, 70, 200, 50)) == []


def test_warp_upright_orders_any_corners() -> None:
    image = np.zeros((100, 100, 3), np.uint8)
    image[20:40, 10:70] = 255
    corners = np.array([[70, 40], [10, 20], [70, 20], [10, 40]], np.float32)
    out = warp_upright(image, corners)
    assert out.shape[:2] == (20, 60)
    assert out.mean() > 250
