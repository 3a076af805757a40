from __future__ import annotations

import numpy as np

from appliance.inference.text_recognition import REC_HEIGHT, CtcDecoder, recognition_batch


def _one_hot(indices: list[int], classes: int) -> np.ndarray:
    probs = np.full((1, len(indices), classes), 0.01, dtype=np.float32)
    for t, i in enumerate(indices):
        probs[0, t, i] = 0.9
    return probs


def test_ctc_collapses_repeats_and_drops_blanks() -> None:
    decoder = CtcDecoder(["A", "B", "1"])  # classes: blank, A, B, 1, space
    (text,) = decoder.decode(_one_hot([1, 1, 0, 1, 2, 2, 4, 3, 0, 0], 5))
    assert text.text == "AAB 1"
    assert abs(text.confidence - 0.9) < 1e-6


def test_allowed_classes_restrict_the_argmax() -> None:
    decoder = CtcDecoder(["A", "B", "1"])
    probs = _one_hot([1, 0], 5)
    probs[0, 0, 3] = 0.5  # "1" is second best where "A" wins
    allowed = decoder.allowed_classes("0123456789")
    (text,) = decoder.decode(probs, allowed)
    assert text.text == "1"
    assert abs(text.confidence - 0.5) < 1e-6


def test_from_metadata_reads_the_embedded_dictionary(gate_ocr) -> None:  # type: ignore[no-untyped-def]
    assert len(gate_ocr.decoder.classes) == 6625
    assert gate_ocr.decoder.classes[0] == "" and gate_ocr.decoder.classes[-1] == " "


def test_batch_keeps_aspect_and_pads_to_widest() -> None:
    narrow = np.full((20, 20, 3), 255, np.uint8)
    wide = np.full((10, 200, 3), 255, np.uint8)
    batch = recognition_batch([narrow, wide])
    assert batch.shape == (2, 3, REC_HEIGHT, 960)
    assert np.allclose(batch[0, :, :, :REC_HEIGHT], 1.0)
    assert np.allclose(batch[0, :, :, REC_HEIGHT + 1 :], 0.0)
