"""Versioned SQLite schema of the catalog: an ordered list of migrations.

``PRAGMA user_version`` holds the applied version.  On open, every migration
above it runs in one transaction each, so a crash mid-upgrade leaves the old
version intact.  Append new migrations; never edit a released one.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]

MIGRATIONS: Final[tuple[tuple[int, str], ...]] = (
    (
        1,
        """
        CREATE TABLE devices (
            device_id   TEXT PRIMARY KEY,
            site_id     TEXT NOT NULL,
            created_at  REAL NOT NULL,
            revoked_at  REAL
        );
        CREATE TABLE operators (
            name        TEXT PRIMARY KEY,
            created_at  REAL NOT NULL,
            revoked_at  REAL
        );
        -- only sha256(token) is stored; subject is a device id or an operator name
        CREATE TABLE credentials (
            token_hash  TEXT PRIMARY KEY,
            role        TEXT NOT NULL CHECK (role IN ('device', 'operator')),
            subject     TEXT NOT NULL,
            created_at  REAL NOT NULL,
            revoked_at  REAL
        );
        CREATE INDEX credentials_subject ON credentials (role, subject);
        CREATE TABLE batches (
            batch_id    TEXT PRIMARY KEY,
            device_id   TEXT NOT NULL REFERENCES devices (device_id),
            site_id     TEXT NOT NULL,
            stream      TEXT NOT NULL,
            first_seq   INTEGER NOT NULL,
            last_seq    INTEGER NOT NULL,
            records     INTEGER NOT NULL,
            sha256      TEXT NOT NULL,
            size        INTEGER NOT NULL,
            lake_paths  TEXT NOT NULL,  -- JSON list, relative to the lake root
            received_at REAL NOT NULL
        );
        CREATE INDEX batches_device_stream ON batches (device_id, stream, last_seq);
        CREATE TABLE watermarks (
            device_id   TEXT NOT NULL,
            stream      TEXT NOT NULL,
            acked_seq   INTEGER NOT NULL,
            PRIMARY KEY (device_id, stream)
        );
        CREATE TABLE uploads (
            upload_id    TEXT PRIMARY KEY,
            device_id    TEXT NOT NULL,
            length       INTEGER NOT NULL,
            sha256       TEXT,
            metadata     TEXT NOT NULL,  -- JSON object of the tus Upload-Metadata
            completed_at REAL NOT NULL
        );
        CREATE TABLE blobs (
            sha256      TEXT PRIMARY KEY,
            size        INTEGER NOT NULL,
            device_id   TEXT NOT NULL,
            upload_id   TEXT NOT NULL,
            stored_at   REAL NOT NULL
        );
        CREATE TABLE raw_requests (
            request_id       TEXT PRIMARY KEY,
            device_id        TEXT NOT NULL,
            seq              INTEGER,
            since            REAL,
            until            REAL,
            reason           TEXT,
            state            TEXT NOT NULL DEFAULT 'requested',
            created_by       TEXT NOT NULL,
            created_at       REAL NOT NULL,
            expires_at       REAL NOT NULL,
            state_changed_at REAL,
            upload_id        TEXT
        );
        CREATE INDEX raw_requests_device_state ON raw_requests (device_id, state);
        CREATE TABLE audit_log (
            event_id    INTEGER PRIMARY KEY AUTOINCREMENT,
            at          REAL NOT NULL,
            actor       TEXT NOT NULL,
            action      TEXT NOT NULL,
            subject     TEXT NOT NULL,
            detail      TEXT NOT NULL
        );
        """,
    ),
    (
        2,
        """
        -- the last handshake of each device: outbox depth, model inventory, link stats
        ALTER TABLE devices ADD COLUMN last_sync_at REAL;
        ALTER TABLE devices ADD COLUMN last_sync TEXT;
        """,
    ),
    (
        3,
        """
        -- model releases as published (docs/OTA.md): the signed manifest bytes as given,
        -- the artifact content-addressed under DATA_DIR/models/artifacts/
        CREATE TABLE model_releases (
            name         TEXT NOT NULL,
            version      TEXT NOT NULL,
            counter      INTEGER NOT NULL,
            sha256       TEXT NOT NULL,
            size         INTEGER NOT NULL,
            keyid        TEXT NOT NULL,
            manifest     BLOB NOT NULL,
            published_by TEXT NOT NULL,
            published_at REAL NOT NULL,
            PRIMARY KEY (name, version)
        );
        -- one rollout per release; state is the pure machine's (cloud_ingest/models/rollout.py)
        CREATE TABLE model_rollouts (
            name        TEXT NOT NULL,
            version     TEXT NOT NULL,
            state       TEXT NOT NULL,  -- JSON
            terminal    INTEGER NOT NULL,
            updated_at  REAL NOT NULL,
            PRIMARY KEY (name, version)
        );
        -- the latest outcome each device reported for each release
        CREATE TABLE model_outcomes (
            device_id   TEXT NOT NULL,
            name        TEXT NOT NULL,
            version     TEXT NOT NULL,
            counter     INTEGER NOT NULL,
            result      TEXT NOT NULL,
            check_name  TEXT,
            reason      TEXT,
            reported_at REAL NOT NULL,
            PRIMARY KEY (device_id, name, version)
        );
        CREATE INDEX model_outcomes_release ON model_outcomes (name, version);
        """,
    ),
)

SCHEMA_VERSION: Final = MIGRATIONS[-1][0]
