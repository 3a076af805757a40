"""Removal of expired uploads (the tus expiration extension)."""

from __future__ import annotations

from cloud_ingest.tus.store import UploadStore

__all__ = ["sweep_expired"]


def sweep_expired(store: UploadStore, now: float) -> int:
    """Delete unfinished uploads whose expiry passed; return how many.

    Synchronous (a few unlinks) so a periodic task can call it directly;
    uploads being written right now are skipped.  Completed uploads are kept
    for the same period after completion so a late HEAD still answers.
    """
    removed = 0
    for upload_id in store.all_ids():
        info = store.get(upload_id)
        if info is None or store.is_busy(upload_id):
            continue
        if info.completed:
            expired = now >= info.expires_at + store.expire_after_s
        else:
            expired = info.is_expired(now)
        if expired:
            store.delete(upload_id)
            removed += 1
    return removed
