"""The one base of every configuration section, and secrets read from files.

Both sides' schemas (``site.toml`` of the appliance, the ingest service's
settings) build on :class:`ConfigSection`: frozen, and ``extra="forbid"`` so a
misspelt setting is an error instead of a silently ignored line.

A secret may be given inline (``token = "..."``) or, better, as a file
(``token_file = "/etc/yardlink/sync.token"``), as systemd credentials are: the
file must be a regular file that no other user may read or write (mode 0600 or
0400), or the configuration is refused with the file's name and the fix.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["ConfigSection", "SECRET_FILE_SUFFIX", "read_secret_file", "take_secret_files"]

SECRET_FILE_SUFFIX = "_file"


class ConfigSection(BaseModel):
    """One section of a configuration file: frozen, and unknown settings are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def read_secret_file(path: str | Path, *, setting: str) -> str:
    """The secret held in ``path`` (surrounding whitespace stripped); ValueError says why not.

    Refused: a missing or unreadable file, anything but a regular file, a file
    that group or others may read or write, and an empty one.
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ValueError(f"{setting}: {path}: no such file") from None
    except OSError as exc:
        raise ValueError(f"{setting}: {path}: cannot read: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{setting}: {path}: not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise ValueError(
            f"{setting}: {path}: mode {mode:04o} lets other users read or change the secret;"
            f" run: chmod 600 {path}"
        )
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{setting}: {path}: cannot read: {exc}") from None
    if not text:
        raise ValueError(f"{setting}: {path}: the file is empty")
    return text


def take_secret_files(data: Any, secrets: Iterable[str]) -> Any:
    """For a ``mode="before"`` validator: put each ``<name>_file``'s content at ``<name>``.

    The ``<name>_file`` setting stays as given (it tells where the secret came
    from); giving both ``<name>`` and ``<name>_file`` is an error.
    """
    if not isinstance(data, dict):
        return data
    resolved = dict(data)
    for name in secrets:
        file_setting = name + SECRET_FILE_SUFFIX
        path = data.get(file_setting)
        if path is None:
            continue
        if not isinstance(path, str | Path):  # pydantic reports ValueError, not TypeError
            raise ValueError(f"{file_setting}: a file path is expected")  # noqa: TRY004
        if data.get(name) is not None:
            raise ValueError(f"{file_setting}: set {name} or {file_setting}, not both")
        resolved[name] = read_secret_file(path, setting=file_setting)
    return resolved
