"""Turn the fault suite's figures into docs/reliability.md.

    python -m tests.faults.report FIGURES.jsonl docs/reliability.md [OUTCOMES]

FIGURES is what `harness.record` appended (one JSON object per run);
OUTCOMES, if given, is a file of pytest summary lines to quote. Used by
scripts/bench-reliability.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TIME_FIGURES = (
    "seconds_to_failed",
    "seconds_past_limit",
    "seconds_to_done",
    "overlap_seconds",
)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def render(entries: list[dict[str, Any]], outcomes: str) -> str:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for entry in entries:
        groups[(entry["scenario"], entry["database"])].append(entry)
    lines = [
        "# Reliability: the fault-injection benchmark",
        "",
        "Written by `scripts/bench-reliability` (do not edit by hand). Each row is",
        "one scenario of tests/faults run repeatedly against real BrokeForge",
        "processes and the real Debian test host; a run that broke an invariant",
        "fails its test and is listed under the outcomes below.",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC at commit {_commit()} "
        f"on {platform.node()} "
        f"({platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}).",
        "",
        "| scenario | database | runs | stuck | figure | p50 | p95 | max "
        "| orphaned remote processes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (scenario, database), runs in sorted(groups.items()):
        figure = next((f for f in TIME_FIGURES if f in runs[0]), None)
        stuck = sum(int(r.get("stuck", 0)) for r in runs)
        orphans = sum(int(r.get("orphans", 0)) for r in runs)
        if figure:
            values = [float(r[figure]) for r in runs]
            cells = [
                figure.replace("_", " "),
                f"{statistics.median(values):.2f} s",
                f"{percentile(values, 0.95):.2f} s",
                f"{max(values):.2f} s",
            ]
        else:
            cells = ["—", "—", "—", "—"]
        lines.append(
            f"| {scenario} | {database} | {len(runs)} | {stuck} | "
            + " | ".join(cells)
            + f" | {orphans} |"
        )
    lines += [
        "",
        "Figures: *seconds to failed* runs from the fault (kill, drop, outage) to",
        "the operation's recorded end; *seconds past limit* is how long after its",
        "timeout an operation ended; *seconds to done* is how long a lost task took",
        "to be dispatched again and run; *overlap* is how long two package",
        "operations on one server ran at the same time (must be 0).",
        "",
        "## Test outcomes",
        "",
        "```",
        outcomes.strip() or "(not recorded)",
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    figures, target = Path(argv[1]), Path(argv[2])
    outcomes = Path(argv[3]).read_text() if len(argv) > 3 else ""
    entries = [json.loads(line) for line in figures.read_text().splitlines() if line]
    text = render(entries, outcomes)
    target.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
