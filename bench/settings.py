"""Settings for the BrokeForge processes a benchmark starts: the product's
own, plus the benchmarks' package kinds. BROKEFORGE_HOME (and, for
PostgreSQL, BROKEFORGE_DATABASE_URL) are the benchmark's own."""

from __future__ import annotations

from importlib.util import find_spec

from brokeforge.settings import *  # noqa: F403

BROKEFORGE_EXTRA_KINDS = [
    # Benchmarks 1 and 2: one remote command (bench/probe.py).
    "bench.probe.BenchJob",
]
# Benchmark 6's install kind, where that benchmark is present (bench/kind.py).
if find_spec("bench.kind") is not None:
    BROKEFORGE_EXTRA_KINDS.append("bench.kind.BenchInstall")
