"""The ``yardlink appliance`` command group."""

from __future__ import annotations

import argparse
import json
import os
import sys

import uvloop

from appliance.config import load_config
from appliance.errors import ApplianceError, ConfigError
from appliance.field_commands import add_field_commands
from appliance.local_auth import make_token
from appliance.tui.cli import register as register_tui

__all__ = ["register"]


class StartupError(ApplianceError):
    """The daemon could not start here (data directory, port, socket): say which and why."""


def _check_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    if args.json:  # secrets are SecretStr: dumped as "**********", never in clear
        print(json.dumps(config.model_dump(mode="json"), indent=2))
    else:
        print(f"{args.file}: ok (device {config.site.device_id} at site {config.site.site_id})")
    return 0


def _gen_token(args: argparse.Namespace) -> int:
    """Print a fresh technician token, or write it to a new file readable by its owner only."""
    token = make_token()
    if args.file is None:
        print(token)
        return 0
    try:  # O_EXCL: never overwrite a token in use; 0600 from the first byte
        fd = os.open(args.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(
            f"{args.file}: already exists; to rotate the token remove it first"
            " (then restart the appliance and give technicians the new one)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{args.file}: cannot create: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(token + "\n")
        out.flush()
        os.fsync(out.fileno())
    print(f"wrote a new technician token to {args.file} (mode 0600)", file=sys.stderr)
    return 0


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config)  # a bad config is refused before anything loads
    from appliance.daemon import run_daemon  # heavy imports (models, aiohttp) only when running

    try:
        # the daemon's loop (docs/ARCHITECTURE.md says why uvloop)
        uvloop.run(run_daemon(config, standby=args.standby))
    except OSError as exc:  # an unusable data_dir, a port in use, ...: the site must fix it
        raise StartupError(f"{args.config}: cannot start the appliance: {exc}") from None
    return 0


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = groups.add_parser("appliance", help="the edge appliance on the gateway")
    commands = group.add_subparsers(dest="command", metavar="COMMAND", required=True)
    check = commands.add_parser(
        "check-config", help="validate a site.toml and print every problem with its path"
    )
    check.add_argument("file", help="path to site.toml")
    check.add_argument("--json", action="store_true", help="print the effective config as JSON")
    check.set_defaults(handler=_check_config)
    gen = commands.add_parser(
        "gen-token", help="make a technician token (256 random bits) for [local_api]"
    )
    gen.add_argument("--file", help="write it to this new file (mode 0600) instead of printing it")
    gen.set_defaults(handler=_gen_token)
    run = commands.add_parser(
        "run", help="run the appliance daemon until SIGTERM/SIGINT (then drain and stop)"
    )
    run.add_argument("--config", required=True, help="path to site.toml")
    run.add_argument(
        "--standby",
        action="store_true",
        help="load the models, then wait for the running appliance to hand over"
        " (it is sent SIGUSR2) and take over its data dir and port (an A/B switch)",
    )
    run.set_defaults(handler=_run)
    add_field_commands(commands)  # status, check, support-bundle
    register_tui(groups)  # yardlink tui: a top-level command of the appliance's technician
