"""Shared plumbing for benchmarks: the result row format and writing results.

Every benchmark compares against its anchor *in the same run* and reports the
ratio.  Rows are written to ``bench/results/<name>.json`` as a list of
``{"metric", "value", "unit", "anchor", "anchor_value", "ratio", "goal", "command"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

RESULTS_DIR = Path(__file__).parent / "results"


@dataclass(frozen=True, slots=True)
class Row:
    metric: str
    value: float
    unit: str
    anchor: str | None
    anchor_value: float | None
    ratio: float | None
    goal: str
    command: str
    met: bool | None = None


def row(
    metric: str,
    value: float,
    unit: str,
    *,
    goal: str,
    command: str,
    anchor: str | None = None,
    anchor_value: float | None = None,
    met: bool | None = None,
) -> Row:
    """Build a result row; the ratio is value / anchor_value when there is an anchor."""
    ratio = None
    if anchor_value:
        ratio = round(value / anchor_value, 4)
    return Row(metric, round(value, 4), unit, anchor, anchor_value, ratio, goal, command, met)


def parse_args(name: str, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / f"{name}.json")
    return parser.parse_args(argv)


def command_for(name: str, quick: bool) -> str:
    return f"python -m bench.{name}" + (" --quick" if quick else "")


def write_results(name: str, rows: list[Row], out: Path | None = None) -> Path:
    """Write rows as JSON and print a small table."""
    out = out or RESULTS_DIR / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = [asdict(r) for r in rows]
    out.write_text(json.dumps(payload, indent=2) + "\n")
    meta = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    (out.parent / f"{name}.meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    width = max(len(r.metric) for r in rows) if rows else 10
    for r in rows:
        ratio = f"{r.ratio:.3f}x {r.anchor}" if r.ratio is not None else ""
        print(f"{r.metric:<{width}}  {r.value:>14,.2f} {r.unit:<10} {ratio:<40} goal {r.goal}")
    return out
