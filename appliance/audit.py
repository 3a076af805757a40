"""Technician actions as audit records: durable in the outbox ``critical`` class.

An audit record has the ``critical`` stream's generic columns (``kind`` plus a
JSON ``body``), so the cloud gets it before any event, and it is never evicted.
The last records are also kept in memory for ``GET /v1/audit`` and the support
bundle (the outbox cannot be read by another process while the daemon runs).
"""

from __future__ import annotations

import json
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from sync.outbox import Outbox
from sync.protocol import Stream

__all__ = ["AUDIT_KIND", "AuditTrail"]

AUDIT_KIND = "audit"
_RECENT = 200  # records kept in memory for /v1/audit and the support bundle
_RECENT_BY_OUTBOX: weakref.WeakKeyDictionary[Outbox, deque[dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)


class AuditTrail:
    """Writes one ``critical`` record per technician action and remembers the recent ones."""

    def __init__(
        self,
        outbox: Outbox,
        *,
        device_id: str,
        site_id: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._outbox = outbox
        self._device_id, self._site_id = device_id, site_id
        self._clock = clock
        # one memory per outbox: every trail writing to it (the API's, the model agent's)
        # shows in /v1/audit
        self._recent = _RECENT_BY_OUTBOX.setdefault(outbox, deque(maxlen=_RECENT))

    async def record(
        self, action: str, detail: Mapping[str, Any] | None = None, *, actor: str = "technician"
    ) -> int:
        """Store the action durably (raises the outbox's typed error if refused); its seq.
        An ``actor`` in ``detail`` (the model agent's) names who acted."""
        now = self._clock()
        detail = dict(detail or {})
        body = {"action": action, "actor": str(detail.get("actor", actor)), "detail": detail}
        payload = {
            "device_id": self._device_id,
            "site_id": self._site_id,
            "seq": 0,  # the outbox assigns it
            "event_time": now,
            "model_name": None,
            "model_version": None,
            "kind": AUDIT_KIND,
            "body": json.dumps(body, separators=(",", ":"), sort_keys=True),
        }
        seq = await self._outbox.append(
            Stream.CRITICAL, json.dumps(payload, separators=(",", ":")).encode()
        )
        self._recent.append({"seq": seq, "at": now, **body})
        return seq

    def recent(self) -> list[dict[str, Any]]:
        """The last audit records of this run, oldest first."""
        return list(self._recent)
