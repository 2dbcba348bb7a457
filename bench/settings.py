"""Settings of the BrokeForge processes a benchmark starts: the product's own,
plus the bench kind (bench/kind.py)."""

from __future__ import annotations

from brokeforge.settings import *  # noqa: F403

BROKEFORGE_EXTRA_KINDS = ["bench.kind.BenchInstall"]
