"""A real PostgreSQL server for the tests, started on loopback and stopped after.

The server binaries are Debian's ``postgresql`` package (``make test`` installs
it when missing; ``YARDLINK_PG_BIN`` may name another ``bin`` directory).
:func:`running_postgres` runs ``initdb`` into a fresh directory and starts the
server on a free loopback port with ``trust`` authentication for one user,
``yardlink``.  PostgreSQL refuses to run as root, so under root the directory
is given to ``nobody`` and the server runs as that user (``runuser``).  A
server that cannot start raises :class:`PostgresStartError` with the end of its
log, so a test fails with the reason instead of hanging or skipping.

Durability is off (``fsync=off``): the tests check what the catalog answers,
not what survives a power cut (the SQLite power-cut tests do that).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

__all__ = ["PostgresServer", "PostgresStartError", "postgres_bin", "running_postgres"]

USER = "yardlink"
_START_TIMEOUT_S = 90


class PostgresStartError(RuntimeError):
    """The server did not come up; the message says why (and holds the end of its log)."""


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@{self.host}:{self.port}/{database}"

    async def create_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"t_{secrets.token_hex(6)}"
        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)

    async def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def postgres_bin() -> Path:
    """The newest installed server's ``bin`` directory (Debian: /usr/lib/postgresql/N/bin)."""
    given = os.environ.get("YARDLINK_PG_BIN")
    candidates = [Path(given)] if given else []
    installed = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(
        installed, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0
    )[::-1]
    for candidate in candidates:
        if (candidate / "pg_ctl").is_file() and (candidate / "initdb").is_file():
            return candidate
    raise PostgresStartError(
        "no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql"
        " (make test does it), or set YARDLINK_PG_BIN to their directory"
    )


def _free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(command: list[str]) -> list[str]:
    """PostgreSQL will not run as root: run it as ``nobody`` then."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "nobody", "--", *command]


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(
        _as_server_user(command), capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise PostgresStartError(f"{what} failed ({done.returncode}): {done.stderr[-2000:]}")


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A server in a fresh directory on a free loopback port; removed after."""
    bin_dir = postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="yardlink-pg-"))  # under /tmp: reachable by nobody
    if os.geteuid() == 0:
        shutil.chown(root, "nobody", "nogroup")
    data, log = root / "data", root / "server.log"
    try:
        _run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                USER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
            "initdb",
        )
        port = _free_port()
        options = (
            f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off"
            " -c full_page_writes=off -c max_connections=300"
        )
        try:
            _run(
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(log),
                    "-w",
                    "-t",
                    str(_START_TIMEOUT_S),
                    "-o",
                    options,
                    "start",
                ],
                "pg_ctl start",
            )
        except PostgresStartError as exc:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise PostgresStartError(f"{exc}\nserver log:\n{tail}") from None
        try:
            yield PostgresServer("127.0.0.1", port)
        finally:
            _run(
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                "pg_ctl stop",
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
