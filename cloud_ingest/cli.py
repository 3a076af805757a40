"""``yardlink ingest ...``: run the cloud service and manage its credentials.

    yardlink ingest serve [--config FILE] [--data-dir DIR] [--catalog postgresql://...]
                          [--host H] [--port P] [--tls-cert F --tls-key F]
    yardlink ingest device add DEVICE_ID --site SITE [--config FILE | --data-dir DIR] [--json]
    yardlink ingest device revoke DEVICE_ID [--config FILE | --data-dir DIR]
    yardlink ingest operator add NAME [--config FILE | --data-dir DIR] [--json]
    yardlink ingest models publish|rollout ...   (cloud_ingest/models/cli.py)
    yardlink ingest compact ...                  (cloud_ingest/lake_compaction_cli.py)

``--config FILE`` is a TOML file of :class:`IngestSettings` (every limit, the
sampling policy, retention, the bind address); a flag given on the command
line wins over the file.  Credential commands open the catalog directly
(SQLite in WAL mode, or the PostgreSQL of ``--catalog``), so they work while
the server runs; a revocation takes effect on its next request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import uvloop
from pydantic import BaseModel

from cloud_ingest.catalog import Catalog
from cloud_ingest.catalog_open import open_catalog
from cloud_ingest.catalog_sqlite import make_private_dir
from cloud_ingest.errors import BadRequest
from cloud_ingest.lake_compaction_cli import register_compaction
from cloud_ingest.models.cli import register_models
from cloud_ingest.provisioning import (
    add_device,
    add_operator,
    list_devices,
    revoke_device,
    revoke_operator,
    rotate_device,
)
from cloud_ingest.settings import IngestSettings, SettingsError, TlsSettings, load_settings

__all__ = ["register"]

T = TypeVar("T")
_CLI_ACTOR = "cli"


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ingest = groups.add_parser("ingest", help="the cloud ingest service")
    commands = ingest.add_subparsers(dest="ingest_command", metavar="COMMAND")
    commands.required = True

    serve = commands.add_parser("serve", help="run the ingest service")
    _where(serve)
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8080; 0 picks a free one)")
    serve.add_argument(
        "--metrics-port", type=int, help="also serve /metrics without a token on 127.0.0.1:PORT"
    )
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate (with --tls-key)")
    serve.add_argument("--tls-key", type=Path, help="PEM private key (with --tls-cert)")
    serve.add_argument(
        "--release-keyring", type=Path, help="trusted model-release keyring (enables publishing)"
    )
    serve.set_defaults(handler=_serve)

    device = commands.add_parser("device", help="device credentials")
    device_commands = device.add_subparsers(dest="device_command", metavar="COMMAND")
    device_commands.required = True
    add = device_commands.add_parser("add", help="register a device, print its token once")
    add.add_argument("device_id")
    add.add_argument("--site", required=True, help="site id of the device")
    _where(add)
    add.add_argument("--json", action="store_true", help="print JSON")
    add.set_defaults(handler=_device_add)
    revoke = device_commands.add_parser("revoke", help="revoke a device's tokens")
    revoke.add_argument("device_id")
    _where(revoke)
    revoke.set_defaults(handler=_device_revoke)
    rotate = device_commands.add_parser(
        "rotate", help="a new token for a device (printed once); the old one is refused at once"
    )
    rotate.add_argument("device_id")
    _where(rotate)
    rotate.add_argument("--json", action="store_true", help="print JSON")
    rotate.set_defaults(handler=_device_rotate)
    listing = device_commands.add_parser("list", help="list devices (the read is audited)")
    _where(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_device_list)

    operator = commands.add_parser("operator", help="operator (admin) credentials")
    operator_commands = operator.add_subparsers(dest="operator_command", metavar="COMMAND")
    operator_commands.required = True
    op_add = operator_commands.add_parser("add", help="create an operator, print its token once")
    op_add.add_argument("name")
    _where(op_add)
    op_add.add_argument("--json", action="store_true", help="print JSON")
    op_add.set_defaults(handler=_operator_add)
    op_revoke = operator_commands.add_parser("revoke", help="revoke an operator's tokens")
    op_revoke.add_argument("name")
    _where(op_revoke)
    op_revoke.set_defaults(handler=_operator_revoke)

    register_models(commands, _where)
    register_compaction(commands, _where, _settings)


def _where(parser: argparse.ArgumentParser) -> None:
    """The options that say where the service's settings, files and catalog are."""
    parser.add_argument(
        "--config", type=Path, help="TOML settings file (docs/OPERATIONS.md); flags win over it"
    )
    parser.add_argument("--data-dir", type=Path, help="the service's data directory")
    parser.add_argument(
        "--catalog", help="PostgreSQL URL of a shared catalog (default: SQLite in the data dir)"
    )
    parser.add_argument(
        "--store",
        help="s3://BUCKET[/PREFIX]?endpoint=URL of a shared object store for the lake, blobs "
        "and uploads (keys: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; default: the data dir)",
    )


def _settings(args: argparse.Namespace, **fields: object) -> IngestSettings:
    if args.config is None and args.data_dir is None:
        raise SettingsError("--data-dir DIR or --config FILE is required")
    settings = load_settings(
        args.config,
        {"data_dir": args.data_dir, "catalog": args.catalog, "store": args.store, **fields},
    )
    _make_data_dir(settings.data_dir)
    return settings


def _make_data_dir(data_dir: Path) -> None:
    """Create ``--data-dir`` if missing; one clear error when it cannot be a directory."""
    if data_dir.exists() and not data_dir.is_dir():
        raise BadRequest(f"data dir {data_dir} is not a directory")
    try:
        make_private_dir(data_dir)
    except OSError as exc:
        raise BadRequest(f"data dir {data_dir} cannot be created: {exc.strerror}") from exc


def _serve(args: argparse.Namespace) -> int:
    from cloud_ingest.server import serve

    if (args.tls_cert is None) != (args.tls_key is None):
        raise BadRequest("--tls-cert and --tls-key go together")
    tls = TlsSettings(cert_file=args.tls_cert, key_file=args.tls_key) if args.tls_cert else None
    settings = _settings(
        args,
        host=args.host,
        port=args.port,
        tls=tls,
        metrics_port=args.metrics_port,
        release_keyring_file=args.release_keyring,
    )
    uvloop.run(serve(settings))
    return 0


def _with_catalog(args: argparse.Namespace, work: Callable[[Catalog], Awaitable[T]]) -> T:
    settings = _settings(args)

    async def run() -> T:
        catalog = await open_catalog(settings)
        try:
            return await work(catalog)
        finally:
            await catalog.close()

    return asyncio.run(run())


def _audited(args: argparse.Namespace, action: Callable[..., Awaitable[T]], *subject: str) -> T:
    """Run a provisioning ``action`` on the catalog, audited as the CLI's, now."""
    return _with_catalog(args, lambda c: action(c, *subject, actor=_CLI_ACTOR, now=time.time()))


def _print_credential(args: argparse.Namespace, created: BaseModel, *lines: str) -> int:
    """A new token: the whole record as JSON with ``--json``, else ``lines`` for a person."""
    if args.json:
        print(json.dumps(created.model_dump()))
    else:
        for line in lines:
            print(line)
    return 0


def _device_add(args: argparse.Namespace) -> int:
    created = _audited(args, add_device, args.device_id, args.site)
    return _print_credential(
        args,
        created,
        f"device {created.device_id} at site {created.site_id}",
        f"token (shown once): {created.token}",
    )


def _device_revoke(args: argparse.Namespace) -> int:
    return _revoked(args, revoke_device, "device", args.device_id)


def _operator_add(args: argparse.Namespace) -> int:
    created = _audited(args, add_operator, args.name)
    return _print_credential(
        args, created, f"operator {created.name}", f"token (shown once): {created.token}"
    )


def _operator_revoke(args: argparse.Namespace) -> int:
    return _revoked(args, revoke_operator, "operator", args.name)


def _revoked(
    args: argparse.Namespace, revoke: Callable[..., Awaitable[object]], kind: str, subject: str
) -> int:
    """Revoke a device or an operator (a repeat is a no-op) and say so."""
    _audited(args, revoke, subject)
    print(f"{kind} {subject} revoked")
    return 0


def _device_rotate(args: argparse.Namespace) -> int:
    created = _audited(args, rotate_device, args.device_id)
    return _print_credential(
        args,
        created,
        f"device {created.device_id}: new token (shown once): {created.token}",
        "the old token is refused from now on",
    )


def _device_list(args: argparse.Namespace) -> int:
    devices = _audited(args, list_devices)
    if args.json:
        print(json.dumps(devices.model_dump(mode="json")))
        return 0
    for device in devices.devices:
        state = "revoked" if device.revoked else "active"
        print(f"{device.device_id}\t{device.site_id}\t{state}\tacked={dict(device.acked)}")
    return 0
