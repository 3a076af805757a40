"""Run every benchmark in turn (``make bench``); each writes bench/results/<name>.json."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = ["outbox", "ingest", "inference", "sync", "bytes_per_event", "image", "push"]


def main() -> int:
    failed = []
    for name in BENCHMARKS:
        if not (Path(__file__).parent / f"{name}.py").is_file():
            print(f"== bench.{name}: not present yet, skipped", flush=True)
            continue
        print(f"== bench.{name}", flush=True)
        args = [sys.executable, "-m", f"bench.{name}", *sys.argv[1:]]
        if subprocess.run(args, check=False).returncode != 0:
            failed.append(name)
    if failed:
        print(f"benchmarks that failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
