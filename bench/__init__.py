"""BrokeForge's benchmarks: figures side by side with what people would
otherwise use, measured in one run on one machine (see bench/run)."""

from __future__ import annotations
