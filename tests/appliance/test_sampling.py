from __future__ import annotations

from appliance.config import SamplingSettings
from appliance.sampling import SamplingPolicy


def test_one_in_n_and_low_confidence_extra_within_the_hourly_cap() -> None:
    policy = SamplingPolicy(
        SamplingSettings(
            every_n_frames=10, max_per_hour=3, low_confidence_below=0.5, low_confidence_every_n=2
        )
    )
    confident = [policy.decide(0.9, now=float(i)) for i in range(20)]
    assert [i for i, taken in enumerate(confident) if taken] == [9, 19]
    low = [policy.decide(0.1, now=100.0 + i) for i in range(6)]
    assert sum(low) == 1 and policy.rate_limited == 2  # cap of 3 per hour reached
    assert policy.decide(0.1, now=100.0 + 3601) is False  # 1st low-conf frame of a new pair
    assert policy.decide(0.1, now=100.0 + 3602) is True  # the hour rolled over


def test_zero_disables_sampling() -> None:
    policy = SamplingPolicy(
        SamplingSettings(every_n_frames=0, max_per_hour=10, low_confidence_every_n=0)
    )
    assert not any(policy.decide(0.0, now=float(i)) for i in range(50))
