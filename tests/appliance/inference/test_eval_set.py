"""The evaluation set: deterministic frames, labels that match the camera, tamper checks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from appliance.inference.eval_set import EvalSetError, load_eval_set, write_eval_set
from appliance.sources.synthetic import SyntheticYardCamera

COUNT = 6


def _digest_tree(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def test_the_same_seed_writes_the_same_bytes(tmp_path: Path) -> None:
    write_eval_set(tmp_path / "a", COUNT, seed=77)
    write_eval_set(tmp_path / "b", COUNT, seed=77)
    write_eval_set(tmp_path / "c", COUNT, seed=78)
    first = _digest_tree(tmp_path / "a")
    assert len(first) == COUNT + 2  # the frames, labels.jsonl, eval-set.json
    assert first == _digest_tree(tmp_path / "b")
    assert first["labels.jsonl"] != _digest_tree(tmp_path / "c")["labels.jsonl"]


def test_labels_are_the_camera_truths_and_mix_difficulties(tmp_path: Path) -> None:
    loaded = write_eval_set(tmp_path, COUNT, seed=77)
    assert len(loaded) == COUNT and loaded.seed == 77
    assert [f.difficulty for f in loaded.frames] == ["clean", "varied", "varied", "varied"] * 1 + [
        "clean",
        "varied",
    ]
    for frame, jpeg in loaded.jpegs():
        camera = SyntheticYardCamera(seed=77, difficulty=frame.difficulty)
        rendered = camera.frame(frame.index)
        assert [(t.kind, t.value, t.valid, t.box) for t in frame.texts] == [
            (t.kind, t.value, t.valid, t.box) for t in rendered.truths
        ]
        assert frame.stacked == (rendered.truths[0].layout == "stacked")
        assert jpeg == rendered.encode(".jpg", 90)  # the camera's frame, as a camera sends it


def test_a_changed_frame_or_label_is_refused(tmp_path: Path) -> None:
    loaded = write_eval_set(tmp_path, 2, seed=5)
    frame_path = tmp_path / loaded.frames[1].file
    frame_path.write_bytes(frame_path.read_bytes() + b"\0")
    with pytest.raises(EvalSetError, match="does not match its sha256"):
        load_eval_set(tmp_path)
    load_eval_set(tmp_path, verify_frames=False)  # labels still intact
    labels = tmp_path / "labels.jsonl"
    labels.write_text(labels.read_text().replace("varied", "clean"))
    with pytest.raises(EvalSetError, match="does not match eval-set.json"):
        load_eval_set(tmp_path, verify_frames=False)


def test_not_an_eval_set_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(EvalSetError, match="is not an evaluation set"):
        load_eval_set(tmp_path / "missing")
    (tmp_path / "eval-set.json").write_text(json.dumps({"format": 99}))
    (tmp_path / "labels.jsonl").write_text("")
    with pytest.raises(EvalSetError, match="unknown format"):
        load_eval_set(tmp_path)
    with pytest.raises(EvalSetError, match="at least one frame"):
        write_eval_set(tmp_path / "empty", 0)
