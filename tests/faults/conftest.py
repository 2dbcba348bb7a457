from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from brokeforge.servers.models import Server
from tests.faults.harness import Fleet, wait_no_leftovers
from tests.faults.probe import PROBE_LOG
from tests.testhosts.fixtures import DebianTestHost


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "faults: fault-injection scenarios (tests/faults; see docs)"
    )


@pytest.fixture
def fleet(transactional_db: None, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture
def host(debian_host: DebianTestHost) -> Iterator[DebianTestHost]:
    """The shared Debian host, with a fresh probe log and nothing left running."""
    debian_host.run(f"rm -f {PROBE_LOG}")
    yield debian_host
    # A dead-man's switch ends its watcher once the channel has closed:
    # give it the moment that takes.
    assert not wait_no_leftovers(debian_host.root)


@pytest.fixture
def host_server(host: DebianTestHost, make_server: Callable[..., Server]) -> Server:
    key = host.client_key.export_private_key().decode()
    return make_server("s1", host=host.host, port=host.port, private_key=key)
