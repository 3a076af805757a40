"""The ``yardlink appliance`` command group."""

from __future__ import annotations

import argparse
import json

import uvloop

from appliance.config import load_config
from appliance.errors import ApplianceError

__all__ = ["register"]


class StartupError(ApplianceError):
    """The daemon could not start here (data directory, port, socket): say which and why."""


def _check_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    if args.json:
        print(json.dumps(config.model_dump(mode="json"), indent=2))
    else:
        print(f"{args.file}: ok (device {config.site.device_id} at site {config.site.site_id})")
    return 0


def _run(args: argparse.Namespace) -> int:
    from appliance.daemon import run_daemon  # heavy imports (models, aiohttp) only when running

    config = load_config(args.config)
    try:
        uvloop.run(run_daemon(config))  # the daemon's loop; docs/ARCHITECTURE.md says why
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
    run = commands.add_parser(
        "run", help="run the appliance daemon until SIGTERM/SIGINT (then drain and stop)"
    )
    run.add_argument("--config", required=True, help="path to site.toml")
    run.set_defaults(handler=_run)
