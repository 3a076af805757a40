"""Masking recall: faces and plates hidden in what would leave the site.

Synthetic yard frames (seeded, so the same frames every run) with real faces pasted
in: the real face and OCR tasks decide what to blur, ``blurred_jpeg`` makes the JPEG
that would leave, and ``appliance.privacy.masking_eval`` counts the truths covered
and runs the independent check on that JPEG.  Rows: recall of faces, of plates and
of both (goal >= 99.5%), faces and plates the independent check still finds (goal
0), and the check measured itself: its recall on the frames released with nothing
hidden and its false alarms on the same frames drawn without faces; every miss is
listed in ``bench/results/masking_misses.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from appliance.privacy.masking_eval import evaluate, load_models
from bench._common import RESULTS_DIR, command_for, parse_args, row, write_results

MODELS = Path(__file__).resolve().parents[1] / "models"
SEED = 2323


def main(argv: list[str] | None = None) -> None:
    args = parse_args("masking", argv)
    frames = 40 if args.quick else 500
    models = load_models(MODELS)
    try:
        began = time.perf_counter()
        result = evaluate(models, SEED, frames, check=True)
        elapsed = time.perf_counter() - began
    finally:
        models.close()
    tally = result.tally
    command = command_for("masking", args.quick)
    face_recall = tally.faces_masked / max(tally.faces, 1)
    plate_recall = tally.plates_masked / max(tally.plates, 1)
    # (metric, value, unit, goal, met: None where the row is a reference)
    figures: list[tuple[str, float, str, str, bool | None]] = [
        ("masking_frames", frames, "frames", ">= 500 (full run)", None),
        ("masking_faces", tally.faces, "faces", "reference", None),
        ("masking_plates", tally.plates, "plates", "reference", None),
        ("masking_face_recall", face_recall, "fraction", ">= 0.995", face_recall >= 0.995),
        ("masking_plate_recall", plate_recall, "fraction", ">= 0.995", plate_recall >= 0.995),
        ("masking_recall", tally.recall, "fraction", ">= 0.995", tally.recall >= 0.995),
        (
            "masking_independent_faces_found",
            len(result.faces_seen_after),
            "faces",
            "0",
            not result.faces_seen_after,
        ),
        (
            "masking_independent_plates_read",
            len(result.plates_read_after),
            "plates",
            "0",
            not result.plates_read_after,
        ),
        (
            "masking_independent_other_faces",
            len(result.other_faces_found),
            "boxes",
            "reference (the check's false alarms, away from any true face)",
            None,
        ),
        (
            "masking_check_recall_in_clear",
            result.faces_found_in_clear / max(result.faces_in_clear, 1),
            "fraction",
            "reference (true faces the check finds in frames released with nothing hidden)",
            None,
        ),
        (
            "masking_check_false_alarms",
            len(result.face_free_false_alarms) / max(result.face_free_frames, 1),
            "faces per frame",
            "0 (the same frames drawn without faces, released)",
            not result.face_free_false_alarms,
        ),
        ("masking_seconds_per_frame", elapsed / frames, "s", "reference", None),
    ]
    rows = [row(m, v, u, goal=g, command=command, met=met) for m, v, u, g, met in figures]
    write_results("masking", rows, args.out)
    misses = {
        "seed": SEED,
        "frames": frames,
        "not_masked": tally.misses,
        "independent_faces_found": result.faces_seen_after,
        "independent_plates_read": result.plates_read_after,
        "independent_other_faces": result.other_faces_found,
        "check_faces_missed_in_clear": result.faces_missed_in_clear,
        "check_false_alarms_without_faces": result.face_free_false_alarms,
    }
    out = (args.out.parent if args.out else RESULTS_DIR) / "masking_misses.json"
    out.write_text(json.dumps(misses, indent=2) + "\n")


if __name__ == "__main__":
    main()
