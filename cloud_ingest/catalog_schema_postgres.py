"""Versioned PostgreSQL schema of the catalog: an ordered list of migrations.

The table ``yardlink_schema`` holds the applied version.  An instance that
starts takes a transaction-scoped advisory lock, reads the version and applies
each migration above it in that transaction (PostgreSQL's DDL is
transactional), so N instances starting at once migrate once and a failure
leaves the old version intact.  Append new migrations; never edit a released one.

The versions are PostgreSQL's own: 1-3 hold the tables of SQLite's 1-3
(``catalog_schema.py``) in PostgreSQL's types; 4 adds what only a shared
catalog needs (the tus upload state of many instances), 5 its part list and fencing.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MIGRATION_LOCK", "MIGRATIONS", "SCHEMA_VERSION", "VERSION_TABLE"]

# advisory lock keys (any bigint): one for migrations, one to order audit ids
MIGRATION_LOCK: Final = 0x79_61_72_64_6C_69_6E_6B  # "yardlink"
VERSION_TABLE: Final = """
CREATE TABLE IF NOT EXISTS yardlink_schema (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    version   INTEGER NOT NULL
)
"""

MIGRATIONS: Final[tuple[tuple[int, str], ...]] = (
    (
        1,
        """
        CREATE TABLE devices (
            device_id   TEXT PRIMARY KEY,
            site_id     TEXT NOT NULL,
            created_at  DOUBLE PRECISION NOT NULL,
            revoked_at  DOUBLE PRECISION
        );
        CREATE TABLE operators (
            name        TEXT PRIMARY KEY,
            created_at  DOUBLE PRECISION NOT NULL,
            revoked_at  DOUBLE PRECISION
        );
        CREATE TABLE credentials (
            token_hash  TEXT PRIMARY KEY,
            role        TEXT NOT NULL CHECK (role IN ('device', 'operator')),
            subject     TEXT NOT NULL,
            created_at  DOUBLE PRECISION NOT NULL,
            revoked_at  DOUBLE PRECISION
        );
        CREATE INDEX credentials_subject ON credentials (role, subject);
        CREATE TABLE batches (
            batch_id    TEXT PRIMARY KEY,
            device_id   TEXT NOT NULL REFERENCES devices (device_id),
            site_id     TEXT NOT NULL,
            stream      TEXT NOT NULL,
            first_seq   BIGINT NOT NULL,
            last_seq    BIGINT NOT NULL,
            records     BIGINT NOT NULL,
            sha256      TEXT NOT NULL,
            size        BIGINT NOT NULL,
            lake_paths  TEXT NOT NULL,
            received_at DOUBLE PRECISION NOT NULL
        );
        CREATE INDEX batches_device_stream ON batches (device_id, stream, last_seq);
        CREATE TABLE watermarks (
            device_id   TEXT NOT NULL,
            stream      TEXT NOT NULL,
            acked_seq   BIGINT NOT NULL,
            PRIMARY KEY (device_id, stream)
        );
        CREATE TABLE uploads (
            upload_id    TEXT PRIMARY KEY,
            device_id    TEXT NOT NULL,
            length       BIGINT NOT NULL,
            sha256       TEXT,
            metadata     TEXT NOT NULL,
            completed_at DOUBLE PRECISION NOT NULL
        );
        CREATE INDEX uploads_device_sha256 ON uploads (device_id, sha256);
        CREATE TABLE blobs (
            sha256      TEXT PRIMARY KEY,
            size        BIGINT NOT NULL,
            device_id   TEXT NOT NULL,
            upload_id   TEXT NOT NULL,
            stored_at   DOUBLE PRECISION NOT NULL
        );
        CREATE TABLE raw_requests (
            request_id       TEXT PRIMARY KEY,
            device_id        TEXT NOT NULL,
            seq              BIGINT,
            since            DOUBLE PRECISION,
            until            DOUBLE PRECISION,
            reason           TEXT,
            state            TEXT NOT NULL DEFAULT 'requested',
            created_by       TEXT NOT NULL,
            created_at       DOUBLE PRECISION NOT NULL,
            expires_at       DOUBLE PRECISION NOT NULL,
            state_changed_at DOUBLE PRECISION,
            upload_id        TEXT,
            -- insertion order, the tie-break SQLite's rowid gives
            created_order    BIGINT GENERATED ALWAYS AS IDENTITY
        );
        CREATE INDEX raw_requests_device_state ON raw_requests (device_id, state);
        CREATE TABLE audit_log (
            event_id    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at          DOUBLE PRECISION NOT NULL,
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
        ALTER TABLE devices ADD COLUMN last_sync_at DOUBLE PRECISION;
        ALTER TABLE devices ADD COLUMN last_sync TEXT;
        """,
    ),
    (
        3,
        """
        CREATE TABLE model_releases (
            name         TEXT NOT NULL,
            version      TEXT NOT NULL,
            counter      BIGINT NOT NULL,
            sha256       TEXT NOT NULL,
            size         BIGINT NOT NULL,
            keyid        TEXT NOT NULL,
            manifest     BYTEA NOT NULL,
            published_by TEXT NOT NULL,
            published_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (name, version)
        );
        CREATE TABLE model_rollouts (
            name        TEXT NOT NULL,
            version     TEXT NOT NULL,
            state       TEXT NOT NULL,
            terminal    INTEGER NOT NULL,
            updated_at  DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (name, version)
        );
        -- at most one rollout per model is not terminal, whichever instance starts it
        CREATE UNIQUE INDEX model_rollouts_one_active ON model_rollouts (name)
            WHERE terminal = 0;
        CREATE TABLE model_outcomes (
            device_id   TEXT NOT NULL,
            name        TEXT NOT NULL,
            version     TEXT NOT NULL,
            counter     BIGINT NOT NULL,
            result      TEXT NOT NULL,
            check_name  TEXT,
            reason      TEXT,
            reported_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (device_id, name, version)
        );
        CREATE INDEX model_outcomes_release ON model_outcomes (name, version);
        """,
    ),
    (
        4,
        """
        -- tus uploads, shared by every instance (cloud_ingest/tus/state_postgres.py):
        -- info is UploadInfo.to_json() (the offset is the chunk data's length, kept
        -- with the data); a lease is the upload's write lock, held by lease_token
        -- until lease_until (seconds on the database's clock), renewed while writing
        CREATE TABLE tus_uploads (
            upload_id    TEXT PRIMARY KEY,
            info         TEXT NOT NULL,
            expires_at   DOUBLE PRECISION NOT NULL,
            completed    BOOLEAN NOT NULL DEFAULT FALSE,
            lease_token  TEXT,
            lease_until  DOUBLE PRECISION
        );
        CREATE INDEX tus_uploads_expiry ON tus_uploads (expires_at);
        """,
    ),
    (
        5,
        """
        -- tus parts kept in the row (no object-store LIST per request) and fenced:
        -- lease_gen counts the leases taken (the fencing token a part is committed
        -- under), data_offset/part_keys are the committed parts in byte order,
        -- assembled marks the parts joined into the blob
        ALTER TABLE tus_uploads
            ADD COLUMN lease_gen   BIGINT NOT NULL DEFAULT 0,
            ADD COLUMN data_offset BIGINT NOT NULL DEFAULT 0,
            ADD COLUMN part_keys   TEXT[] NOT NULL DEFAULT '{}',
            ADD COLUMN assembled   BOOLEAN NOT NULL DEFAULT FALSE;
        """,
    ),
)

SCHEMA_VERSION: Final = MIGRATIONS[-1][0]
