"""What every benchmark shares: its result shape, percentiles, the machine.

A benchmark module exposes `run(quick: bool) -> Section`. `quick` asks for a
short run (fewer repetitions) that proves the benchmark works; the figures
in docs/performance.md come from full runs.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from dataclasses import dataclass, field
from importlib import metadata


@dataclass
class Goal:
    """One of the issue's goals and whether this run met it."""

    text: str
    met: bool
    figure: str


@dataclass
class Section:
    title: str
    #: Column names, then one row per system or measurement.
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    #: How it was measured, in a sentence or two, and anything surprising.
    notes: list[str] = field(default_factory=list)


def percentile(values: list[float], pct: float) -> float:
    """The `pct` percentile (0-100) by linear interpolation."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def seconds(value: float) -> str:
    """A duration as people read it: ms below a second, s above."""
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s"


def spread(values: list[float]) -> str:
    """min / median / max of some durations."""
    return " / ".join(
        seconds(v) for v in (min(values), statistics.median(values), max(values))
    )


def version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def debian_version(package: str) -> str:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or "not installed"


def machine() -> dict[str, str]:
    """The machine and versions the figures were measured with."""
    try:
        with open("/etc/os-release", encoding="utf-8") as release:
            pretty = next(
                line.split("=", 1)[1].strip().strip('"')
                for line in release
                if line.startswith("PRETTY_NAME=")
            )
    except (OSError, StopIteration):
        pretty = platform.platform()
    with open("/proc/meminfo", encoding="utf-8") as meminfo:
        mem_kib = next(
            int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:")
        )
    return {
        "os": pretty,
        "cpus": str(os.cpu_count()),
        "memory": f"{mem_kib / 1024 / 1024:.0f} GiB",
        "python": platform.python_version(),
    }
