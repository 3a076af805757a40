"""Run every benchmark in turn (``make bench``); each writes bench/results/<name>.json."""

from __future__ import annotations

import subprocess
import sys

# bench.inference also runs bench.inference_ocr; bench.tui_screenshot is a picture, not a benchmark.
BENCHMARKS = [
    "outbox",
    "ingest",
    "ingest_batches",
    "bytes_per_event",
    "inference",
    "face_latency",
    "masking",
    "sync",
    "push",
    "ota",
    "ota_rollout",
    "fleet",
    "image",
    "tui_polling",
]


def main() -> int:
    failed = []
    for name in BENCHMARKS:
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
