"""Neutral code that the device side and the cloud side both need.

``cloud_ingest`` may import only this package and ``sync.protocol`` of ``sync``
(the import-linter contracts in pyproject.toml), so anything both sides use
(durable file writes, the JSON error runner, the signed-artifact verifier)
lives here once instead of being copied.
"""
