"""A synthetic yard camera: deterministic gate frames with known ground truth.

Each frame shows a container side with an ISO 6346 code painted on it (most
with a correct check digit, a configurable fraction with a wrong one; the
check digit boxed; on one line, or a fraction with the owner code stacked
above the serial number as on container doors) and,
usually, a truck with a UK-style number plate (``AB12 CDE``).  Frames vary in
blur, rotation, sensor noise and lighting; ``difficulty="clean"`` turns the
variation down to what a well-placed gate camera sees on a good day.

Frames show real faces too (``faces=True``, the default): a driver in the cab
window above the plate, and often a person at the gate, cut from photographs
that ship in scikit-image (``appliance.sources.synthetic_faces``), at known boxes
(``SyntheticFrame.faces``), drawn from a random stream of their own so that the
rest of a frame is the same with or without them.

Everything is drawn with OpenCV from a seed: ``SyntheticYardCamera(seed=7)
.frame(42)`` is the same image on every machine and every run, so tests can
measure accuracy against ``SyntheticFrame.truths`` and demos can replay.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np

from appliance.inference import iso6346
from appliance.sources.synthetic_faces import FACE_SIZE_RANGE, face_photo

__all__ = ["FrameConditions", "GroundTruth", "SyntheticFrame", "SyntheticYardCamera"]

Image = np.ndarray[Any, Any]

_CONTAINER_COLOURS = [(40, 50, 160), (150, 90, 30), (40, 120, 40), (30, 30, 30), (200, 200, 200)]
_FONTS = [cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX]
_PLATE_LETTERS = "ABCDEFGHJKLMNOPRSTUVWXYZ"  # UK plates never use I, Q (and Z only at the end)


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """What is really in the frame: kind, canonical value, validity and box (x, y, w, h)."""

    kind: Literal["container_code", "plate", "face"]
    value: str  # 11-character container code, "AB12 CDE", or a face's photograph
    valid: bool  # check digit correct (plates: always True)
    box: tuple[int, int, int, int]
    layout: Literal["line", "stacked"] = "line"  # a container code's owner above its serial


@dataclass(frozen=True, slots=True)
class FrameConditions:
    """The nuisance parameters applied to a frame."""

    blur_sigma: float
    rotation_deg: float
    noise_sigma: float
    gain: float  # brightness multiplier
    bias: float  # brightness offset


@dataclass(frozen=True, slots=True)
class SyntheticFrame:
    """One frame (BGR uint8) with its ground truth and the conditions it was made under."""

    index: int
    image_bgr: Image
    truths: tuple[GroundTruth, ...]  # container codes and plates
    conditions: FrameConditions
    faces: tuple[GroundTruth, ...] = ()  # real faces pasted in: must be blurred before upload

    def encode(self, ext: Literal[".jpg", ".png"] = ".jpg", quality: int = 90) -> bytes:
        """The frame as JPEG or PNG bytes, as a camera would push it."""
        params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == ".jpg" else []
        ok, buffer = cv2.imencode(ext, self.image_bgr, params)
        if not ok:
            raise ValueError(f"cannot encode frame {self.index} as {ext}")
        return bytes(buffer.tobytes())


def _container_code(rng: random.Random, valid: bool) -> str:
    owner = "".join(rng.choice(string.ascii_uppercase) for _ in range(3))
    category = rng.choices("UJZ", weights=(8, 1, 1))[0]
    serial = "".join(rng.choice(string.digits) for _ in range(6))
    check = iso6346.check_digit(owner + category + serial)
    if not valid:
        check = (check + rng.randint(1, 9)) % 10
    return f"{owner}{category}{serial}{check}"


def _uk_plate(rng: random.Random) -> str:
    area = "".join(rng.choice(_PLATE_LETTERS) for _ in range(2))
    age = f"{rng.randint(2, 7)}{rng.randint(0, 9)}"
    rest = "".join(rng.choice(_PLATE_LETTERS) for _ in range(3))
    return f"{area}{age} {rest}"


def _background(rng: random.Random, height: int, width: int) -> Image:
    sky = np.array([rng.randint(150, 230), rng.randint(120, 200), rng.randint(90, 150)], np.float32)
    ground = np.array([rng.randint(60, 110)] * 3, np.float32)
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    image = sky * (1 - ramp) + ground * ramp
    return np.repeat(image, width, axis=1).astype(np.uint8)


def _text_box(
    origin: tuple[int, int], text: str, font: int, scale: float, thickness: int
) -> tuple[int, int, int, int]:
    (w, h), baseline = cv2.getTextSize(text, font, scale, thickness)
    return origin[0], origin[1] - h, w, h + baseline


class SyntheticYardCamera:
    """Deterministic gate frames: ``frame(i)`` depends only on ``(seed, i)`` and the options."""

    def __init__(
        self,
        seed: int = 0,
        *,
        width: int = 1280,
        height: int = 720,
        invalid_fraction: float = 0.2,
        plate_probability: float = 0.8,
        stacked_fraction: float = 0.2,
        difficulty: Literal["clean", "varied"] = "varied",
        faces: bool = True,
        gate_person_probability: float = 0.5,
    ) -> None:
        for option, value in (
            ("invalid_fraction", invalid_fraction),
            ("plate_probability", plate_probability),
            ("stacked_fraction", stacked_fraction),
            ("gate_person_probability", gate_person_probability),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{option} must be within [0, 1], got {value}")
        self.seed = seed
        self.width = width
        self.height = height
        self.invalid_fraction = invalid_fraction
        self.plate_probability = plate_probability
        self.stacked_fraction = stacked_fraction
        self.difficulty = difficulty
        self.faces = faces
        self.gate_person_probability = gate_person_probability

    def __iter__(self) -> Iterator[SyntheticFrame]:
        index = 0
        while True:
            yield self.frame(index)
            index += 1

    def frames(self, count: int, start: int = 0) -> list[SyntheticFrame]:
        return [self.frame(i) for i in range(start, start + count)]

    def _conditions(self, rng: random.Random) -> FrameConditions:
        if self.difficulty == "clean":
            return FrameConditions(0.0, 0.0, rng.uniform(0.0, 3.0), rng.uniform(0.9, 1.1), 0.0)
        return FrameConditions(
            blur_sigma=rng.choice([0.0, 0.0, rng.uniform(0.5, 2.0)]),
            rotation_deg=rng.uniform(-6.0, 6.0),
            noise_sigma=rng.uniform(0.0, 12.0),
            gain=rng.uniform(0.55, 1.3),
            bias=rng.uniform(-25.0, 25.0),
        )

    def frame(self, index: int) -> SyntheticFrame:
        rng = random.Random(f"{self.seed}:{index}")
        image = _background(rng, self.height, self.width)
        truths = [self._draw_container(rng, image)]
        cab: tuple[int, int, int, int] | None = None
        if rng.random() < self.plate_probability:
            plate, cab = self._draw_plate(rng, image)
            truths.append(plate)
        faces = self._draw_faces(random.Random(f"{self.seed}:{index}:faces"), image, cab)
        conditions = self._conditions(rng)
        image, moved = self._apply(rng, image, truths + faces, conditions)
        kept = tuple(moved[: len(truths)])
        return SyntheticFrame(index, image, kept, conditions, tuple(moved[len(truths) :]))

    def _draw_faces(
        self, rng: random.Random, image: Image, cab: tuple[int, int, int, int] | None
    ) -> list[GroundTruth]:
        """The driver in the cab window (when there is a truck) and maybe a person at the
        gate, right of the truck and below the container."""
        if not self.faces:
            return []
        w, h = self.width, self.height
        low, high = (round(side * w / 1280) for side in FACE_SIZE_RANGE)
        spots = []
        if cab is not None:
            cab_x, cab_y, cab_w, _ = cab
            size = rng.randint(low, high)
            spots.append((cab_x + int(cab_w * rng.uniform(0.08, 0.6)), cab_y + 8, size))
        if rng.random() < self.gate_person_probability:
            size = rng.randint(low, min(high, int(w * 0.065)))
            spots.append(
                (int(w * rng.uniform(0.87, 0.925)), int(h * rng.uniform(0.62, 0.74)), size)
            )
        faces = []
        for x, y, size in spots:
            name, photo = face_photo(rng, size)
            image[y : y + size, x : x + size] = photo
            faces.append(GroundTruth("face", name, True, (x, y, size, size)))
        return faces

    def _draw_container(self, rng: random.Random, image: Image) -> GroundTruth:
        w, h = self.width, self.height
        x0, y0 = int(w * rng.uniform(0.02, 0.12)), int(h * rng.uniform(0.04, 0.12))
        x1, y1 = int(w * rng.uniform(0.85, 0.98)), int(h * rng.uniform(0.5, 0.6))
        colour = rng.choice(_CONTAINER_COLOURS)
        cv2.rectangle(image, (x0, y0), (x1, y1), colour, -1)
        shade = tuple(max(0, c - 25) for c in colour)
        for x in range(x0 + 12, x1, 24):  # corrugation
            cv2.line(image, (x, y0), (x, y1), shade, 3)
        ink = (25, 25, 25) if sum(colour) > 450 else (240, 240, 240)
        valid = rng.random() >= self.invalid_fraction
        code = _container_code(rng, valid)
        font = rng.choice(_FONTS)
        scale = rng.uniform(1.3, 2.0) * w / 1280
        thickness = max(2, round(scale * 2.2))
        origin = (x0 + int((x1 - x0) * rng.uniform(0.05, 0.3)), y0 + int(70 * scale) + 20)
        stacked = rng.random() < self.stacked_fraction
        if stacked:  # owner code above the serial, as on doors
            cv2.putText(image, code[:4], origin, font, scale, ink, thickness, cv2.LINE_AA)
            top_x, top_y, top_w, top_h = _text_box(origin, code[:4], font, scale, thickness)
            origin = (origin[0], origin[1] + int(top_h * 1.6))
            head = code[4:10]
        else:
            head = f"{code[:4]} {code[4:10]}"
            top_x, top_y, top_w, top_h = _text_box(origin, head, font, scale, thickness)
        cv2.putText(image, head, origin, font, scale, ink, thickness, cv2.LINE_AA)
        hx, hy, hw, hh = _text_box(origin, head, font, scale, thickness)
        digit_origin = (hx + hw + int(30 * scale), origin[1])
        cv2.putText(image, code[10], digit_origin, font, scale, ink, thickness, cv2.LINE_AA)
        dx, dy, dw, dh = _text_box(digit_origin, code[10], font, scale, thickness)
        pad = int(8 * scale)
        cv2.rectangle(
            image, (dx - pad, dy - pad), (dx + dw + pad, dy + dh), ink, max(1, thickness // 2)
        )
        left, top = min(hx, top_x), min(top_y, dy - pad)
        right, bottom = max(dx + dw + pad, top_x + top_w), max(hy + hh, dy + dh)
        box = (left, top, right - left, bottom - top)
        layout: Literal["line", "stacked"] = "stacked" if stacked else "line"
        return GroundTruth("container_code", code, valid, box, layout)

    def _draw_plate(
        self, rng: random.Random, image: Image
    ) -> tuple[GroundTruth, tuple[int, int, int, int]]:
        """The truck's cab with its plate: the plate's truth and the cab's box."""
        w, h = self.width, self.height
        cab_x = int(w * rng.uniform(0.15, 0.55))
        cab_w, cab_h = int(w * 0.3), int(h * 0.3)
        cab_y = h - cab_h - int(h * 0.02)
        cv2.rectangle(image, (cab_x, cab_y), (cab_x + cab_w, cab_y + cab_h), (90, 70, 60), -1)
        plate = _uk_plate(rng)
        scale = rng.uniform(1.1, 1.5) * w / 1280
        thickness = max(2, round(scale * 2.5))
        font = cv2.FONT_HERSHEY_DUPLEX
        (tw, th), base = cv2.getTextSize(plate, font, scale, thickness)
        px = cab_x + (cab_w - tw) // 2 - 12
        py = cab_y + cab_h - th - base - 40
        background = rng.choice([(255, 255, 255), (40, 200, 250)])  # front white, rear yellow
        cv2.rectangle(image, (px, py), (px + tw + 24, py + th + base + 20), background, -1)
        cv2.putText(
            image, plate, (px + 12, py + th + 10), font, scale, (10, 10, 10), thickness, cv2.LINE_AA
        )
        truth = GroundTruth("plate", plate, True, (px, py, tw + 24, th + base + 20))
        return truth, (cab_x, cab_y, cab_w, cab_h)

    def _apply(
        self,
        rng: random.Random,
        image: Image,
        truths: list[GroundTruth],
        conditions: FrameConditions,
    ) -> tuple[Image, list[GroundTruth]]:
        if conditions.rotation_deg:
            centre = (self.width / 2, self.height / 2)
            matrix = cv2.getRotationMatrix2D(centre, conditions.rotation_deg, 1.0)
            image = cv2.warpAffine(
                image, matrix, (self.width, self.height), borderMode=cv2.BORDER_REPLICATE
            )
            truths = [self._rotate_truth(t, matrix) for t in truths]
        if conditions.blur_sigma:
            image = cv2.GaussianBlur(image, (0, 0), conditions.blur_sigma)
        pixels = image.astype(np.float32) * conditions.gain + conditions.bias
        if conditions.noise_sigma:
            noise = np.random.default_rng(rng.getrandbits(32)).normal(
                0.0, conditions.noise_sigma, pixels.shape
            )
            pixels += noise.astype(np.float32)
        return np.clip(pixels, 0, 255).astype(np.uint8), truths

    def _rotate_truth(self, truth: GroundTruth, matrix: Image) -> GroundTruth:
        x, y, w, h = truth.box
        corners = np.array([[x, y, 1], [x + w, y, 1], [x + w, y + h, 1], [x, y + h, 1]], np.float32)
        moved = corners @ matrix.T
        x0, y0 = np.floor(moved.min(axis=0)).astype(int)
        x1, y1 = np.ceil(moved.max(axis=0)).astype(int)
        box = (int(x0), int(y0), int(x1 - x0), int(y1 - y0))
        return GroundTruth(truth.kind, truth.value, truth.valid, box, truth.layout)
