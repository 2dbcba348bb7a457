"""Settings for the BrokeForge processes a benchmark starts: the product's
own, plus the benchmarks' package kinds. BROKEFORGE_HOME (and, for
PostgreSQL, BROKEFORGE_DATABASE_URL) are the benchmark's own."""

from __future__ import annotations

from brokeforge.settings import *  # noqa: F403

BROKEFORGE_EXTRA_KINDS = [
    # Benchmarks 1 and 2: one remote command (bench/probe.py).
    "bench.probe.BenchJob",
    # Benchmarks 3 and 6: an install that takes a few seconds (bench/kind.py).
    "bench.kind.BenchInstall",
]
