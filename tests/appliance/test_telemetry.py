from __future__ import annotations

from appliance.telemetry import Telemetry


def test_percentiles_violations_and_confidence_histogram() -> None:
    telemetry = Telemetry({"gate_ocr": 300.0})
    for latency in range(1, 101):
        telemetry.record_result("gate_ocr", float(latency) * 4, {"container_code": [0.95]})
    latency = telemetry.latency("gate_ocr")
    assert latency["p50"] is not None and 195 < latency["p50"] < 205
    assert latency["p99"] is not None and latency["p99"] > 390
    assert telemetry.violations["gate_ocr"] == 25  # 304..400 ms
    snapshot = telemetry.snapshot()
    assert snapshot["class_counts"] == {"container_code": 100}
    assert snapshot["confidence_hist"] == {"container_code": [0] * 9 + [100]}
    assert telemetry.latency("face_anonymize") == {"p50": None, "p95": None, "p99": None}
