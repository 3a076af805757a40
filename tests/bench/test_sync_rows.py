"""bench.sync's rows: what each goodput and latency figure is measured against (pure)."""

from __future__ import annotations

from dataclasses import asdict

from bench.sync import DSL, rows_for


def _steady(**extra: float) -> dict[str, float]:
    base = {
        "idle_burst_s": 0.3,
        "events_s": 0.5,
        "events_before_raw": 1.0,
        "event_wire_bytes": 60_000.0,
        "json_bytes": 1_775_000.0,
        "goodput_bps": 1.99e6,
        "cpu_share": 0.01,
        "event_wait_s": 1.0,
        "plain_upload_s": 0.4,
    }
    return base | extra


def _rows(dsl: dict[str, float], flap: dict[str, float]) -> dict[str, dict[str, object]]:
    sat = _steady(goodput_bps=19.5e6)
    rows = rows_for(True, dsl, sat, flap, 1_000, 100_000, 5_000)
    return {r.metric: asdict(r) for r in rows}


FLAP = {"goodput_bps": 1.12e6, "capacity_bps": 1.3e6, "latencies": 5.0, "event_latency_max_s": 1.2}


def test_events_are_timed_against_a_plain_upload_of_their_bytes_in_the_same_run() -> None:
    rows = _rows(_steady(events_s=0.47, plain_upload_s=0.4), FLAP)
    events = rows["time to deliver 5000 events after link-up"]
    assert events["anchor_value"] == 0.4 and events["met"] is True  # 1.175x <= 1.2x
    slower = _rows(_steady(events_s=0.49, plain_upload_s=0.4), FLAP)
    assert slower["time to deliver 5000 events after link-up"]["met"] is False  # 1.225x
    link_time = 60_000 * 8 / DSL.rate_bps  # the old anchor: bytes / link rate, no round trip
    assert events["anchor_value"] != link_time


def test_flapping_goodput_is_against_the_time_online_not_the_link_rate() -> None:
    [flapping] = [
        r for m, r in _rows(_steady(), FLAP).items() if "down 4 s" in m and "goodput" in m
    ]
    assert flapping["anchor_value"] == 1.3e6 and flapping["met"] is True  # 0.86x
    short = FLAP | {"goodput_bps": 1.0e6}  # 0.77x of the time-averaged capacity
    [missed] = [r for m, r in _rows(_steady(), short).items() if "down 4 s" in m and "goodput" in m]
    assert missed["met"] is False
