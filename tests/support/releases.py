"""A signed model release for the update tests: the kit that signs manifests of it.

The session fixture that builds it (``release_kit``) is in tests/appliance/updates/conftest.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from appliance.updates.package import Build, sign_release
from sync.protocol.releases import RolloutPlan
from sync.shared.signing import Keyring, SigningKey

__all__ = ["DEVICE_CLASS", "MODELS_DIR", "NEW_VERSION", "REPO", "ReleaseKit"]

REPO = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO / "models"
DEVICE_CLASS = "x86-cpu"
NEW_VERSION = "2026-12-07-rc1"


@dataclass(frozen=True)
class ReleaseKit:
    build: Build
    key: SigningKey
    keyring: Keyring
    issued_at: int

    def sign(
        self,
        *,
        counter: int = 2,
        issued_at: int | None = None,
        expires_in_s: int = 30 * 86_400,
        rollback: bool = False,
        key: SigningKey | None = None,
    ) -> bytes:
        """Signed manifest bytes of the session's release."""
        _, data = sign_release(
            self.build.archive,
            [key or self.key],
            counter=counter,
            issued_at=self.issued_at if issued_at is None else issued_at,
            expires_in_s=expires_in_s,
            rollout=RolloutPlan(canary_sites=["wh-nyc-01"]),
            rollback=rollback,
        )
        return data
