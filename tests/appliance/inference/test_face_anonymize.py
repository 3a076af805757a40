"""Real BlazeFace on LiteRT, on scikit-image's astronaut photo (Eileen Collins)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from skimage import data

from appliance.inference import face_anonymize
from appliance.inference.blazeface import tile_regions
from appliance.inference.face_anonymize import FaceAnonymizeTask, blur_faces
from appliance.inference.results import Detection, TaskResult
from appliance.inference.runtimes import TensorSpec
from appliance.inference.settings import FaceAnonymizeSettings
from appliance.sources.synthetic import SyntheticYardCamera


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def _faces(result: TaskResult) -> list[Detection]:
    """The faces (not the boxes scored just under a face, ``face_unsure``)."""
    return [d for d in result.detections if d.kind == "face"]


def _sharpness(region: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(region, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def test_face_is_found_where_it_is(face_task: FaceAnonymizeTask, astronaut: np.ndarray) -> None:
    result = face_task.run(astronaut)
    faces = [d for d in result.detections if d.kind == "face"]
    # best first: her face; the scan for small faces also scores the patch on her suit
    # (33-45 px, its centre below her chin) at ~0.52, a false face that costs a filled
    # patch only
    assert 1 <= len(faces) <= 2
    assert all(d.confidence < 0.6 and d.box[1] + d.box[3] / 2 > 180 for d in faces[1:])
    x, y, w, h = faces[0].box
    # her face spans roughly x 170-280, y 60-200 in the 512x512 photo
    assert 140 <= x + w / 2 <= 260 and 90 <= y + h / 2 <= 180
    assert 60 <= w <= 160
    assert faces[0].confidence >= 0.7


@pytest.mark.parametrize("method", ["pixelate", "gaussian", "fill"])
def test_face_comes_out_blurred(
    face_task: FaceAnonymizeTask, astronaut: np.ndarray, method: str
) -> None:
    faces = _faces(face_task.run(astronaut))
    (x, y, w, h) = faces[0].box
    blurred = blur_faces(astronaut, [d.box for d in faces], method=method)  # type: ignore[arg-type]
    before, after = astronaut[y : y + h, x : x + w], blurred[y : y + h, x : x + w]
    assert after.astype(np.float64).var() < 0.6 * before.astype(np.float64).var()
    assert _sharpness(after) < 0.05 * _sharpness(before)
    # the detector is far less sure there is a face at all once it is blurred
    again = [d.confidence for d in _faces(face_task.run(blurred))]
    assert max(again, default=0.0) < faces[0].confidence - 0.2
    # nothing far from the face changed
    assert np.array_equal(blurred[400:], astronaut[400:])
    assert np.array_equal(astronaut, cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))


def test_tiles_find_a_small_face_in_a_wide_frame(
    face_task: FaceAnonymizeTask, astronaut: np.ndarray
) -> None:
    frame = np.full((720, 1280, 3), 90, np.uint8)
    frame[100:460, 700:1060] = cv2.resize(astronaut, (360, 360))  # her face is ~65 px here
    faces = face_task.run(frame).detections
    assert len(faces) >= 1
    x, y, w, h = faces[0].box
    assert 780 <= x + w / 2 <= 900 and 140 <= y + h / 2 <= 230
    whole_frame_only = FaceAnonymizeTask(
        face_task.models[:1], FaceAnonymizeSettings(scan_face_fractions=[])
    )
    # the whole frame alone finds no box of her face's size (at 0.4 it scores a box
    # three times her face's side around the photograph, 0.44)
    assert all(d.box[2] > 2 * w for d in whole_frame_only.run(frame).detections)
    blurred = face_task.blur(frame, face_task.run(frame))
    assert _sharpness(blurred[y : y + h, x : x + w]) < 0.1 * _sharpness(frame[y : y + h, x : x + w])


def test_no_face_in_a_yard_scene(face_task: FaceAnonymizeTask) -> None:
    from appliance.sources.synthetic import SyntheticYardCamera

    frame = SyntheticYardCamera(seed=2, faces=False).frame(0)  # no driver, no passer-by
    assert _faces(face_task.run(frame.image_bgr)) == []


def test_blur_clips_boxes_at_the_frame_edge() -> None:
    image = np.random.default_rng(0).integers(0, 255, (100, 100, 3), dtype=np.uint8)
    out = blur_faces(image, [(-20, 80, 50, 50)])
    assert out.shape == image.shape
    assert _sharpness(out[85:, :25]) < 0.2 * _sharpness(image[85:, :25])


def test_a_filled_box_keeps_nothing_of_what_was_in_it(astronaut: np.ndarray) -> None:
    """``fill`` paints the box from its surroundings only: whatever face was inside, the
    frame that leaves is the same, and the pixels around the box are untouched."""
    other = astronaut.copy()
    other[100:200, 150:250] = 255 - other[100:200, 150:250]  # a different "face"
    box = [(150, 100, 100, 100)]
    filled, filled_other = (blur_faces(i, box, method="fill") for i in (astronaut, other))
    assert np.array_equal(filled, filled_other)
    assert not np.array_equal(filled[100:200, 150:250], astronaut[100:200, 150:250])
    grown = np.zeros(astronaut.shape[:2], bool)
    grown[75:225, 125:275] = True  # the box grown by the default margin, 0.25 a side
    assert np.array_equal(filled[~grown], astronaut[~grown])
    whole = blur_faces(astronaut, [(0, 0, 512, 512)], margin=0.0, method="fill")
    assert whole.reshape(-1, 3).std(axis=0).max() == 0  # nothing around it: one colour


def test_faces_match_running_every_region_one_after_another(
    face_task: FaceAnonymizeTask, astronaut: np.ndarray
) -> None:
    """The model runs in its own thread while inputs are made and outputs decoded: each
    output must still be decoded with its own region (a mix-up moves or loses faces)."""
    frame = np.full((720, 1280, 3), 90, np.uint8)
    frame[300:660, 860:1220] = cv2.resize(astronaut, (360, 360))  # in the last tiles
    frame[20:220, 40:240] = cv2.resize(astronaut, (200, 200))  # in the first ones
    one_by_one = [
        face
        for region, tensor, fit in face_task._inputs(frame)
        for face in face_task._faces_in(
            face_task._by_shape[0].get(tensor.shape).run({face_task.model.inputs[0].name: tensor}),
            fit,
            region,
            tensor.shape[1:3],
        )
    ]
    assert len(one_by_one) >= 2
    assert sorted(face_task._detect(frame), key=repr) == sorted(one_by_one, key=repr)


class _FailingModel:
    """A stand-in BlazeFace whose every ``fail_every``-th call raises."""

    runtime = "fake"
    output_names = ("regressors", "classificators")

    def __init__(self, fail_every: int) -> None:
        # sides dynamic: it runs the scan windows' shapes itself, as one model thread's
        self.inputs = (TensorSpec("input", (1, None, None, 3), np.dtype(np.float32)),)
        self.calls = 0
        self.fail_every = fail_every

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        if self.calls % self.fail_every == 0:
            raise RuntimeError("invoke failed")
        return _no_faces(inputs)


def _no_faces(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """BlazeFace's outputs for an input of any size, with no face in them."""
    _, height, width, _ = next(iter(inputs.values())).shape
    anchors = (height // 8) * (width // 8) * 2 + (height // 16) * (width // 16) * 6
    return {
        "regressors": np.zeros((1, anchors, 16), np.float32),
        "classificators": np.full((1, anchors, 1), -10.0, np.float32),
    }


def _model_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "face-anonymize-model"]


def test_a_model_error_reaches_the_caller_and_the_next_frame_runs() -> None:
    before = len(_model_threads())
    model = _FailingModel(fail_every=3)
    task = FaceAnonymizeTask([model], FaceAnonymizeSettings())  # type: ignore[list-item]
    frame = np.full((720, 1280, 3), 90, np.uint8)
    with pytest.raises(RuntimeError, match="invoke failed"):
        task.run(frame)  # 4 calls (2 + 1 scan windows, the whole frame): the 3rd fails
    model.fail_every = 10**6
    assert task.run(frame).detections == []
    assert len(_model_threads()) == before + 1
    task.close()
    assert len(_model_threads()) == before
    assert task.run(frame).detections == []  # starts again after close
    task.close()
    assert len(_model_threads()) == before


class _MeetingModel(_FailingModel):
    """Its first call waits (at ``meeting``) until the other model thread is in a call
    too, so each thread surely takes one of the frame's calls, however the OS
    schedules them on a loaded machine."""

    def __init__(self, fail_every: int, meeting: threading.Barrier) -> None:
        super().__init__(fail_every)
        self.meeting = meeting

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.calls == 0:
            self.meeting.wait()
        return super().run(inputs)


def test_an_error_in_either_model_thread_reaches_the_caller() -> None:
    before = len(_model_threads())
    meeting = threading.Barrier(2, timeout=60)
    fine, failing = _MeetingModel(10**6, meeting), _MeetingModel(1, meeting)
    task = FaceAnonymizeTask([fine, failing], FaceAnonymizeSettings())  # type: ignore[list-item]
    frame = np.full((720, 1280, 3), 90, np.uint8)
    with pytest.raises(RuntimeError, match="invoke failed"):
        task.run(frame)
    assert fine.calls > 0 and failing.calls > 0  # both threads took calls
    assert len(_model_threads()) == before + 2
    failing.fail_every = 10**6
    assert task.run(frame).detections == []
    task.close()
    assert len(_model_threads()) == before
    task.run(frame)
    assert len(_model_threads()) == before + 2  # both start again after close
    task.close()
    assert len(_model_threads()) == before


class _OneAtATimeModel(_FailingModel):
    """Counts calls that overlap (an interpreter must serve one call at a time) and
    fails the first ``failures`` calls; each call takes a few milliseconds."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__(fail_every=10**6)
        self.failures = failures
        self.active = self.overlaps = 0
        self._lock = threading.Lock()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            self.active += 1
            self.overlaps += self.active > 1
            self.calls += 1
            fail = self.calls <= self.failures
        try:
            time.sleep(0.003)
            if fail:
                raise RuntimeError("invoke failed")
            return _no_faces(inputs)
        finally:
            with self._lock:
                self.active -= 1


def test_no_call_of_a_failed_frame_runs_on_after_the_error() -> None:
    """The error of the first call reaches the caller only once the frame's other
    calls are done: none may still run when the next frame starts."""
    model = _OneAtATimeModel(failures=1)
    task = FaceAnonymizeTask([model], FaceAnonymizeSettings())  # type: ignore[list-item]
    try:
        frame = np.full((720, 1280, 3), 90, np.uint8)
        with pytest.raises(RuntimeError, match="invoke failed"):
            task.run(frame)
        calls_at_error, active_at_error = model.calls, model.active
        time.sleep(0.1)
        assert active_at_error == 0 and model.calls == calls_at_error  # nothing ran on
        assert task.run(frame).detections == []
    finally:
        task.close()


def test_one_region_frames_from_several_threads_never_share_an_interpreter() -> None:
    model = _OneAtATimeModel()
    settings = FaceAnonymizeSettings(scan_face_fractions=[], tile_fractions=[1.0])
    task = FaceAnonymizeTask([model], settings)  # type: ignore[list-item]
    try:
        frame = np.full((256, 256, 3), 90, np.uint8)
        assert len(task._regions(frame)) == 1
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(task.run, [frame] * 40))
        assert [r.detections for r in results] == [[]] * 40
        assert model.calls == 40 and model.overlaps == 0
    finally:
        task.close()


def test_tile_regions_are_worked_out_once_per_frame_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[int, int]] = []

    def counting(height: int, width: int, *args: object) -> list[tuple[int, int, int, int]]:
        calls.append((height, width))
        return tile_regions(height, width, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(face_anonymize, "tile_regions", counting)
    task = FaceAnonymizeTask([_FailingModel(fail_every=10**6)], FaceAnonymizeSettings())  # type: ignore[list-item]
    try:
        for height, width in [(720, 1280), (720, 1280), (480, 640), (720, 1280)]:
            task.jpeg_reduction(width, height)
            task.run(np.full((height, width, 3), 90, np.uint8))
            settings = task.settings
            expected = tile_regions(height, width, settings.tile_fractions, settings.tile_overlap)
            assert task._tiles(height, width) == expected
        assert calls == [(720, 1280), (480, 640)]
    finally:
        task.close()


def _bench_frames(astronaut: np.ndarray, count: int) -> list[np.ndarray]:
    """The frames of ``bench.inference``: yard scenes with her face pasted in, as JPEGs."""
    frames = []
    for frame in SyntheticYardCamera(seed=0).frames(count):
        image = frame.image_bgr.copy()
        image[400:700, 900:1180] = astronaut[0:300, 100:380]
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        frames.append(cv2.imdecode(encoded, cv2.IMREAD_COLOR))
    return frames


def test_parallel_invokes_find_exactly_the_faces_of_one_model_thread(
    face_task: FaceAnonymizeTask, astronaut: np.ndarray
) -> None:
    """Two interpreters side by side: same regions, same inputs, outputs decoded in
    region order, so the same faces (every box and score) as one thread."""
    assert face_task.settings.parallel_invokes == 2 and len(face_task.models) == 2
    assert face_task.models[0] is not face_task.models[1]
    one = FaceAnonymizeTask(face_task.models[:1], FaceAnonymizeSettings(parallel_invokes=1))
    try:
        images = [astronaut, *_bench_frames(astronaut, 12)]
        found = 0
        for image in images:
            assert face_task._detect(image) == one._detect(image)
            assert face_task.run(image).detections == one.run(image).detections
            half = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2))
            assert face_task._detect(half, 2) == one._detect(half, 2)
            found += len(one.run(image).detections)
        assert found >= len(images)  # her face in every one of them
    finally:
        one.close()


def test_runs_from_several_threads_get_their_own_faces(
    face_task: FaceAnonymizeTask, astronaut: np.ndarray
) -> None:
    """Callers share the model threads; each must get the replies of its own frame."""
    left = np.full((720, 1280, 3), 90, np.uint8)
    left[20:220, 40:240] = cv2.resize(astronaut, (200, 200))
    right = np.full((720, 1280, 3), 90, np.uint8)
    right[300:660, 860:1220] = cv2.resize(astronaut, (360, 360))
    expected = {id(f): face_task.run(f).detections for f in (left, right)}
    assert expected[id(left)] != expected[id(right)]
    with ThreadPoolExecutor(4) as pool:
        frames = [left, right] * 6
        results = list(pool.map(face_task.run, frames))
    assert [r.detections for r in results] == [expected[id(f)] for f in frames]


_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}


@pytest.mark.parametrize(("size", "expected"), [((1280, 720), 2), ((1920, 1080), 2)])
def test_a_jpeg_decoded_smaller_gives_the_same_faces(
    face_task: FaceAnonymizeTask,
    astronaut: np.ndarray,
    size: tuple[int, int],
    expected: int,
) -> None:
    """The daemon decodes a JPEG 2x smaller when the face task runs alone: the finest
    scan resizes the frame to half its size (1280x720) or a third (1920x1080) anyway.
    The faces must be those of the full decode."""
    width, height = size
    frame = np.full((height, width, 3), 90, np.uint8)
    face = astronaut[0:300, 100:380]
    for (x, y), side in (((40, 20), 360), ((980, 460), 200), ((700, 60), 130)):
        k = width / 1280  # the same layout at either size
        x, y, side = round(x * k), round(y * k), round(side * k)
        frame[y : y + side, x : x + side] = cv2.resize(face, (side, side))
    ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    buffer = np.frombuffer(encoded.tobytes(), np.uint8)
    reduction = face_task.jpeg_reduction(width, height)
    assert reduction == expected
    small = cv2.imdecode(buffer, _REDUCED_FLAGS[reduction])
    assert small.shape[:2] == (height // reduction, width // reduction)
    full = _faces(face_task.run(cv2.imdecode(buffer, cv2.IMREAD_COLOR)))
    reduced = _faces(face_task.run(small, reduced_by=reduction))
    assert len(full) == 3
    assert len(reduced) == len(full)
    pairs = zip(
        sorted(full, key=lambda d: d.box), sorted(reduced, key=lambda d: d.box), strict=True
    )
    for a, b in pairs:
        assert max(abs(p - q) for p, q in zip(a.box, b.box, strict=True)) <= 6, (a.box, b.box)


def test_no_reduction_for_sides_it_does_not_divide(face_task: FaceAnonymizeTask) -> None:
    assert face_task.jpeg_reduction(1281, 720) == 1
    assert face_task.jpeg_reduction(640, 480) == 1  # its finest scan needs every pixel
