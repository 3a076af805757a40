"""``yardlink ingest models ...``: publish releases and drive rollouts on a data directory.

    yardlink ingest models publish release.tar --manifest M --keyring K --data-dir DIR
    yardlink ingest models rollout start|pause|resume|abort|status NAME VERSION --data-dir DIR

(``--config FILE`` and ``--catalog postgresql://...`` as for the credential commands.)
Like those, these open the catalog directly (SQLite in WAL mode, or the
shared PostgreSQL) and work while the server runs; devices see a change at their next
handshake.  ``--keyring`` is the trusted release keyring the service uses
(public keys only).  Every change is audited with the actor ``cli``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from prometheus_client import CollectorRegistry

from cloud_ingest.catalog import Catalog
from cloud_ingest.catalog_open import open_catalog
from cloud_ingest.catalog_sqlite import make_private_dir
from cloud_ingest.errors import BadRequest
from cloud_ingest.models.registry import ModelRegistry, load_keyring
from cloud_ingest.models.rollouts import RolloutService, RolloutStatus
from cloud_ingest.models.store import ReleaseStore, open_release_store
from cloud_ingest.settings import IngestSettings, SettingsError, load_settings
from cloud_ingest.storage import open_storage
from sync.shared.signing import MAX_ENVELOPE_BYTES

__all__ = ["register_models"]

T = TypeVar("T")
_CLI_ACTOR = "cli"
_ROLLOUT_ACTIONS = ("start", "pause", "resume", "abort", "status")


def register_models(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    data_dir: Callable[[argparse.ArgumentParser], None],
) -> None:
    models = commands.add_parser("models", help="model releases and rollouts")
    sub = models.add_subparsers(dest="models_command", metavar="COMMAND")
    sub.required = True

    publish = sub.add_parser("publish", help="publish a signed release (verified first)")
    publish.add_argument("archive", type=Path, help="release.tar from 'yardlink models package'")
    publish.add_argument("--manifest", type=Path, required=True, help="its signed manifest")
    publish.add_argument(
        "--keyring", type=Path, required=True, help="the trusted release keyring of the service"
    )
    data_dir(publish)
    publish.set_defaults(handler=_publish)

    rollout = sub.add_parser("rollout", help="start, pause, resume, abort or show a rollout")
    rollout.add_argument("action", choices=_ROLLOUT_ACTIONS)
    rollout.add_argument("name")
    rollout.add_argument("version")
    rollout.add_argument("--reason", default="", help="why (kept in the audit log)")
    data_dir(rollout)
    rollout.add_argument("--json", action="store_true", help="print JSON")
    rollout.set_defaults(handler=_rollout)


def _settings(args: argparse.Namespace) -> IngestSettings:
    if getattr(args, "config", None) is None and args.data_dir is None:
        raise SettingsError("--data-dir DIR or --config FILE is required")
    overrides = {"data_dir": args.data_dir, "catalog": getattr(args, "catalog", None)}
    return load_settings(getattr(args, "config", None), overrides)


def _run(
    args: argparse.Namespace,
    work: Callable[[ReleaseStore, Catalog, IngestSettings], Awaitable[T]],
) -> T:
    settings = _settings(args)
    data_dir = settings.data_dir
    if data_dir.exists() and not data_dir.is_dir():
        raise BadRequest(f"--data-dir {data_dir} is not a directory")
    make_private_dir(data_dir)

    async def run() -> T:
        catalog = await open_catalog(settings)  # migrates
        try:
            store = await open_release_store(settings, catalog)
            try:
                return await work(store, catalog, settings)
            finally:
                await store.close()
        finally:
            await catalog.close()

    return asyncio.run(run())


def _publish(args: argparse.Namespace) -> int:
    manifest = _read(args.manifest, MAX_ENVELOPE_BYTES)
    keyring = load_keyring(args.keyring)
    if not args.archive.is_file():
        raise BadRequest(f"{args.archive} is not a file")

    async def chunks() -> AsyncIterator[bytes]:
        with args.archive.open("rb") as handle:
            while chunk := await asyncio.to_thread(handle.read, 1 << 20):
                yield chunk

    async def work(store: ReleaseStore, _: Catalog, settings: IngestSettings) -> tuple[str, bool]:
        storage = await asyncio.to_thread(open_storage, settings)  # S3 in fleet mode
        spool = settings.data_dir / "models" / "incoming"
        registry = ModelRegistry(storage.store, spool, store, keyring)
        result = await registry.publish(manifest, chunks(), actor=_CLI_ACTOR, now=time.time())
        r = result.release
        return f"{r.name} {r.version} counter {r.counter} sha256 {r.sha256}", result.created

    line, created = _run(args, work)
    print(("published " if created else "already published ") + line)
    return 0


def _rollout(args: argparse.Namespace) -> int:
    async def work(store: ReleaseStore, catalog: Catalog, _: IngestSettings) -> RolloutStatus:
        service = RolloutService(store, catalog, CollectorRegistry())
        now = time.time()
        if args.action == "start":
            return await service.start(args.name, args.version, actor=_CLI_ACTOR, now=now)
        if args.action == "status":
            return await service.status(args.name, args.version, now=now)
        return await service.act(
            args.name, args.version, args.action, actor=_CLI_ACTOR, now=now, reason=args.reason
        )

    status = _run(args, work).to_json()
    if args.json:
        print(json.dumps(status))
        return 0
    paused = " (paused)" if status["paused"] else ""
    print(
        f"{status['name']} {status['version']}: {status['phase']}{paused} at {status['percent']}%;"
        f" {status['eligible']} eligible, {status['reporting']} reporting,"
        f" {status['committed']} committed, {status['failed']} failed"
    )
    if status.get("reason"):
        print(f"reason: {status['reason']}")
    return 0


def _read(path: Path, limit: int) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise BadRequest(f"cannot read {path}: {exc.strerror}") from exc
    if len(data) > limit:
        raise BadRequest(f"{path} is larger than {limit} bytes")
    return data
