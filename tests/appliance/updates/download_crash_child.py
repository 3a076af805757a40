"""Child process of the download crash test: download an artifact until killed.

python -m tests.appliance.updates.download_crash_child BASE_URL PATH DEST SIZE SHA256 TOKEN
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from appliance.updates.download import HttpFetcher, download_artifact
from sync.shared.signing import FileDigest


async def _main(base: str, path: str, dest: Path, size: int, sha256: str, token: str) -> None:
    await download_artifact(HttpFetcher(base, token), path, dest, FileDigest(size, sha256))
    print("done", flush=True)


if __name__ == "__main__":
    base, path, dest, size, sha256, token = sys.argv[1:7]
    asyncio.run(_main(base, path, Path(dest), int(size), sha256, token))
