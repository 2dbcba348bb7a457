from __future__ import annotations

from collections.abc import Callable

import pytest

from brokeforge.lifecycle.models import Operation
from brokeforge.lifecycle.runner import OperationRunner
from brokeforge.servers.models import Server
from brokeforge.servers.service import add_server

pytest_plugins = ["tests.testhosts.fixtures"]

TEST_WORKER = "test-host:1:worker"


@pytest.fixture
def make_server(db: None) -> Callable[..., Server]:
    counter = iter(range(1, 1000))

    def make(
        name: str | None = None,
        host: str = "127.0.0.1",
        port: int = 22,
        private_key: str | None = None,
    ) -> Server:
        return add_server(
            name or f"s{next(counter)}", host, port=port, private_key=private_key
        )

    return make


def run_now(operation: Operation, worker: str = TEST_WORKER) -> Operation:
    """Run a queued operation in this process, as a worker would, and reload it."""
    OperationRunner(operation.pk, worker).run()
    operation.refresh_from_db()
    return operation
