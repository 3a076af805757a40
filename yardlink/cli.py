"""The ``yardlink`` command: one entry point, one subcommand group per capability.

Each package that has a working capability exposes ``register(subparsers)`` in
its own ``cli`` module; this root only wires them.  It lives outside the four
product packages so that none of them has to import another to build the CLI
(see docs/ARCHITECTURE.md, "Command root").

A command handler returns an exit code.  Errors a user can act on are raised as
:class:`UserFacingError` subclasses (or the packages' typed errors) and printed
as one ``error: ...`` line, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from yardlink import __version__

__all__ = ["main"]

# Modules that provide a command group: ``register(subparsers) -> None``.
_GROUP_MODULES: tuple[str, ...] = (
    "appliance.cli",
    "appliance.updates.cli",
    "cloud_ingest.cli",
    "image_build.cli",
)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="yardlink",
        description="Store-and-forward edge appliance for supply-chain yards.",
    )
    parser.add_argument("--version", action="version", version=f"yardlink {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity (logs are JSON lines on stderr)",
    )
    groups = parser.add_subparsers(dest="group", metavar="GROUP")
    groups.required = True
    for module_name in _GROUP_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # that capability is not built yet: no placeholder command
            raise
        register: Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]
        register = module.register
        register(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    from yardlink.logs import configure_logging

    configure_logging(args.log_level)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.error("choose a command")
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if getattr(exc, "user_facing", False):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        logging.getLogger("yardlink").exception("unexpected error")
        print(f"error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
