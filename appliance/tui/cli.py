"""``yardlink tui``: start the technician's TUI (textual is imported only when it runs)."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    from appliance.field_commands import connection
    from appliance.tui.app import YardlinkTui
    from appliance.tui.client import ApplianceClient

    url, token = connection(args)
    YardlinkTui(ApplianceClient(url, token), poll_s=args.poll_s).run()
    return 0


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from appliance.field_commands import add_connection_arguments

    tui = groups.add_parser("tui", help="the technician's dashboard (a client of the local API)")
    add_connection_arguments(tui)
    tui.add_argument("--poll-s", type=float, default=1.0, help="status refresh period")
    tui.set_defaults(handler=_run)
