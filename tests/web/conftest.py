"""Fixtures for the page tests (accounts and clients are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from brokeforge.servers.models import Server


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server("web-1")
