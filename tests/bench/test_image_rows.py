"""bench.image's switch rows: the install's switch and the worst one, each against
the same run's anchor, met only under 5 s."""

from __future__ import annotations

from bench.image import switch_rows


def test_switch_rows_compare_with_the_same_runs_anchor() -> None:
    rows = switch_rows(
        " under systemd",
        [(0.5, 0.9), (0.7, 1.1), (6.0, 6.5)],
        "systemctl restart",
        [(32.0, 33.0), (34.0, 35.0)],
        "python -m bench.image",
    )
    health, frames, worst = rows
    assert health.metric == "not serving (/healthz) during the A/B install's switch under systemd"
    assert (health.value, health.anchor_value, health.met) == (0.5, 32.0, True)
    assert health.anchor == "systemctl restart (same run)"
    assert (frames.value, frames.anchor_value, frames.met) == (0.9, 33.0, True)
    assert worst.metric == "not serving (/healthz), worst of 3 standby switches under systemd"
    assert (worst.value, worst.anchor_value, worst.met) == (6.0, 34.0, False)
    assert worst.anchor == "worst of 2 systemctl restart, interleaved"
