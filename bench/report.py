"""Render bench/results/*.json as the tables in docs/BENCHMARKS.md.

``make bench`` runs every benchmark and then this, so the document shows the
numbers of the last run, never numbers copied by hand.  Text outside the
``<!-- results:NAME -->`` ... ``<!-- /results:NAME -->`` markers is kept.

    python -m bench.report [--doc docs/BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).parent / "results"
DOC = Path(__file__).parents[1] / "docs" / "BENCHMARKS.md"


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def _met(row: dict[str, Any]) -> str:
    met = row.get("met")
    return {True: "yes", False: "**no**", None: ""}[met]


def table(name: str) -> str:
    """The markdown table of one benchmark's last results, with when and how it ran."""
    rows: list[dict[str, Any]] = json.loads((RESULTS_DIR / f"{name}.json").read_text())
    meta_path = RESULTS_DIR / f"{name}.meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    commands = sorted({r["command"] for r in rows})
    lines = [
        f"`{'`, `'.join(commands)}` — {meta.get('when', '?')}, "
        f"{meta.get('cpus', '?')} CPUs, Python {meta.get('python', '?')}",
        "",
        "| metric | value | unit | anchor (same run) | anchor value | ratio | goal | met |",
        "|---|---:|---|---|---:|---:|---|---|",
    ]
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.3f}x"
        lines.append(
            f"| {r['metric']} | {_number(r['value'])} | {r['unit']} | {r['anchor'] or ''} "
            f"| {_number(r['anchor_value'])} | {ratio} | {r['goal']} | {_met(r)} |"
        )
    return "\n".join(lines)


def render(doc: str) -> str:
    """``doc`` with every results block replaced by the current table."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if not (RESULTS_DIR / f"{name}.json").exists():
            return match.group(0)
        return f"<!-- results:{name} -->\n{table(name)}\n<!-- /results:{name} -->"

    return re.sub(r"<!-- results:(\w+) -->.*?<!-- /results:\1 -->", replace, doc, flags=re.DOTALL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args(argv)
    if not args.doc.exists():
        print(f"{args.doc}: not found")
        return 1
    args.doc.write_text(render(args.doc.read_text()))
    print(f"{args.doc}: tables updated from {RESULTS_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
