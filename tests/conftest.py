"""Hypothesis profiles for the whole suite.

``make test`` (and so CI) runs the property tests derandomized: the same
examples every run, so a red CI always reproduces and a green one is not
luck. ``make fuzz`` runs the property tests with fresh random examples; whatever
it finds becomes a test of its own (see tests/cloud_ingest/data/).
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
