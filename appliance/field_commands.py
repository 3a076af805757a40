"""``yardlink appliance status|check|support-bundle``: the technician's plain commands.

``status`` shows the dashboard's facts once (text or ``--json``), ``check``
diagnoses the installation (``appliance.install_check``), ``support-bundle``
writes a ``.tar.gz`` safe to mail (``appliance.support_bundle``).  They reach
the daemon through its local API only, like the TUI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from appliance.config import load_config
from appliance.errors import ApplianceError
from appliance.install_check import Level, api_url, run_checks, secret_value
from appliance.support_bundle import build_bundle, collect_logs
from appliance.tui import panel_lines
from appliance.tui.client import DEFAULT_URL, ApplianceClient
from appliance.tui.formatting import duration
from appliance.tui.status_view import read_status

__all__ = ["add_connection_arguments", "add_field_commands", "connection"]

DEFAULT_CONFIG = "/etc/yardlink/site.toml"  # where the image installs it


class FieldCommandError(ApplianceError):
    """A file the command needs cannot be read or written (token file, bundle)."""


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="site.toml: the API address and token come from it")
    parser.add_argument("--url", help=f"local API (default {DEFAULT_URL}, or unix:/path)")
    parser.add_argument("--token-file", help="file holding the technician token")


def connection(args: argparse.Namespace) -> tuple[str, str | None]:
    """The local API's URL and the technician token the arguments point at."""
    url, token = args.url, None
    if args.config:
        config = load_config(args.config)
        url = url or api_url(config)
        token = secret_value(config.local_api.technician_token)
    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise FieldCommandError(f"{args.token_file}: cannot read the token: {exc}") from None
    return url or DEFAULT_URL, token or os.environ.get("YARDLINK_TECHNICIAN_TOKEN")


def status_text(status: Any) -> str:
    view = read_status(status)
    sections = [
        ("Alerts", panel_lines.alert_lines(view)),
        ("Link", panel_lines.link_lines(view)),
        ("Sync", panel_lines.sync_lines(view)),
        ("Inference", panel_lines.inference_lines(view)),
        ("Models", panel_lines.model_lines(view)),
        ("Outbox", [*panel_lines.outbox_lines(view), " " + panel_lines.outbox_summary(view)]),
    ]
    head = f"{view.device_id or '?'}  up {duration(view.uptime_s)}"
    return "\n".join([head] + [f"\n{title}\n" + "\n".join(lines) for title, lines in sections])


async def _fetch_status(url: str, token: str | None) -> Any:
    async with ApplianceClient(url, token) as client:
        return await client.status()


def _status(args: argparse.Namespace) -> int:
    url, token = connection(args)
    status = asyncio.run(_fetch_status(url, token))
    view = read_status(status)
    if args.json:
        alerts = [asdict(alert) for alert in view.alerts]
        print(json.dumps({"api": url, "alerts": alerts, "status": status}, indent=2))
    else:
        print(status_text(status))
    return 1 if any(alert.severity == "fail" for alert in view.alerts) else 0


def _check(args: argparse.Namespace) -> int:
    checks = asyncio.run(run_checks(args.config))
    for check in checks:
        print(check.line())
    worst = max((check.level for check in checks), default=Level.OK)
    print(f"\n{len(checks)} checks: worst is {worst.name.lower()}")
    return int(worst)


async def _collect(url: str, token: str | None) -> tuple[Any, Any, str | None, list[str]]:
    problems: list[str] = []
    status: Any = None
    audit: Any = None
    metrics: str | None = None
    async with ApplianceClient(url, token) as client:
        for name in ("status", "audit", "metrics"):
            try:
                if name == "status":
                    status = await client.status()
                elif name == "audit":
                    audit = (await client.audit()).get("records")
                else:
                    metrics = await client.metrics()
            except (ApplianceError, AttributeError) as exc:
                problems.append(f"{name}: {exc}")
    return status, audit, metrics, problems


def _support_bundle(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    url, token = api_url(config), secret_value(config.local_api.technician_token)
    status, audit, metrics, problems = asyncio.run(_collect(url, token))
    body = build_bundle(
        config=config,
        status=status,
        audit=audit,
        metrics=metrics,
        logs=collect_logs(),
        problems=problems,
    )
    out = Path(args.out)
    try:
        out.write_bytes(body)
        out.chmod(0o600)
    except OSError as exc:
        raise FieldCommandError(f"{out}: cannot write the bundle: {exc}") from None
    print(
        f"{out}: {len(body)} bytes, no secret inside"
        + (f" ({len(problems)} parts missing)" if problems else "")
    )
    for problem in problems:
        print(f"  not collected: {problem}", file=sys.stderr)
    return 0


def add_field_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser("status", help="the dashboard's facts once (text or --json)")
    add_connection_arguments(status)
    status.add_argument("--json", action="store_true", help="the status, alerts, as JSON")
    status.set_defaults(handler=_status)
    check = commands.add_parser(
        "check", help="diagnose the installation: one line per check, exit code = worst"
    )
    check.add_argument("--config", required=True, help="path to site.toml")
    check.set_defaults(handler=_check)
    bundle = commands.add_parser(
        "support-bundle", help="write a .tar.gz for support (logs, status, redacted config)"
    )
    bundle.add_argument("--config", default=DEFAULT_CONFIG, help=f"site.toml ({DEFAULT_CONFIG})")
    bundle.add_argument("--out", required=True, help="FILE.tar.gz to write")
    bundle.set_defaults(handler=_support_bundle)
