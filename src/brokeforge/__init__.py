"""BrokeForge: a self-hosted server control panel whose records never stay stuck."""

from __future__ import annotations

__version__ = "0.1.0"
