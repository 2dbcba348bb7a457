"""Settings for the BrokeForge processes a benchmark starts: the product's
own, plus the benchmark's job kind. BROKEFORGE_HOME is the benchmark's
temporary data directory."""

from __future__ import annotations

from brokeforge.settings import *  # noqa: F403

BROKEFORGE_EXTRA_KINDS = ["bench.probe.BenchJob"]
