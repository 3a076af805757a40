"""What the tests that run an installed appliance share: its site config, the release
set v1 / v2 / broken, a free port and a frame push with the technician token.

Bundle building, reading and damaging live in ``bundle_kit``; this module is for the
tests that start what they installed (install slots, standby and systemd switch, QEMU).
"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path

from appliance.sources.synthetic import SyntheticYardCamera
from image_build.build import BuiltBundle
from image_build.source import build_project_wheel, copy_tree
from sync.shared.signing import Keyring, SigningKey
from tests.image_build.bundle_kit import EPOCH, bundle_factory

TOKEN = "technician-token-for-tests-7Kq2xW9fRm4p"

# The ``full_releases`` fixture: (work directory, site config) -> v1, v2 and broken.
FullReleases = Callable[[Path, Path], dict[str, BuiltBundle]]

# A release whose appliance raises before it serves: the daemon's start, with a raise.
_DAEMON_START = "    daemon = Daemon(config, claim_data_dir=claim)\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unprovisioned_site(path: Path, port: int, host: str = "127.0.0.1") -> Path:
    """The site config a bundle carries: one camera, the API on ``host:port``."""
    path.write_text(
        "version = 1\n[site]\ndevice_id = 'unprovisioned'\nsite_id = 'depot-north'\n"
        f"data_dir = '/var/lib/yardlink'\n[local_api]\nhost = '{host}'\nport = {port}\n"
        f"technician_token = '{TOKEN}'\n[[sources.cameras]]\nid = 'gate-in'\n"
    )
    return path


def release_set(
    work: Path,
    site: Path,
    *,
    release_key: SigningKey,
    keyring: Keyring,
    project_wheel: Path,
    wheelhouse: Path,
    source_tree: Path,
) -> dict[str, BuiltBundle]:
    """v1 (counter 100), v2 (counter 200) and a broken release (300) whose daemon exits."""
    build = bundle_factory(release_key, keyring, project_wheel, wheelhouse)
    broken_tree = work / "broken-src"
    broken_tree.mkdir()
    copy_tree(source_tree, broken_tree)
    daemon = broken_tree / "appliance" / "daemon.py"
    text = daemon.read_text()
    assert _DAEMON_START in text
    raising = '    raise RuntimeError("a broken release")\n' + _DAEMON_START
    daemon.write_text(text.replace(_DAEMON_START, raising))
    broken_wheel = build_project_wheel(broken_tree, work / "broken-dist", source_date_epoch=EPOCH)
    broken = bundle_factory(release_key, keyring, broken_wheel, wheelhouse)
    return {
        "v1": build(work / "v1", counter=100, site_config=site),
        "v2": build(work / "v2", counter=200, issued_at=EPOCH + 60, site_config=site),
        "broken": broken(work / "broken", counter=300, issued_at=EPOCH + 120, site_config=site),
    }


def frame_request(api: str) -> urllib.request.Request:
    """POST of one synthetic gate-in frame to the appliance's API at ``api``."""
    return urllib.request.Request(
        f"{api}/v1/frames?camera=gate-in",
        data=SyntheticYardCamera(3).frame(0).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/jpeg"},
    )
