from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.test import Client

from brokeforge.lifecycle.models import Operation, OperationState, RecordStatus
from brokeforge.lifecycle.runner import OperationRunner
from brokeforge.packages.models import Database
from brokeforge.servers.models import Server
from brokeforge.servers.service import add_server

pytest_plugins = ["tests.testhosts.fixtures"]

TEST_WORKER = "test-host:1:worker"
PASSWORD = "a long and unusual passphrase 42"


@pytest.fixture
def user(db: None) -> User:
    """Alice, who owns the servers `make_server` makes unless told otherwise."""
    return User.objects.create_user("alice", password=PASSWORD)


@pytest.fixture
def signed_in(client: Client, user: User) -> Client:
    client.force_login(user)
    return client


@pytest.fixture
def make_server(user: User) -> Callable[..., Server]:
    counter = iter(range(1, 1000))

    def make(
        name: str | None = None,
        host: str = "127.0.0.1",
        port: int = 22,
        private_key: str | None = None,
        owner: User | None = None,
    ) -> Server:
        return add_server(
            name or f"s{next(counter)}",
            host,
            port=port,
            private_key=private_key,
            owner=owner or user,
        )

    return make


@pytest.fixture
def make_database() -> Callable[..., Database]:
    def make(
        server: Server,
        kind: str = "redis",
        status: str = RecordStatus.ACTIVE,
        *,
        last_action: str = "install",
        error_message: str = "",
        version: str = "",
    ) -> Database:
        return Database.objects.create(
            server=server,
            kind=kind,
            status=status,
            last_action=last_action,
            error_message=error_message,
            version=version,
        )

    return make


@pytest.fixture
def make_operation() -> Callable[..., Operation]:
    def make(record: Database, **fields: Any) -> Operation:
        values: dict[str, Any] = {
            "record_type": ContentType.objects.get_for_model(Database),
            "record_id": record.pk,
            "record_label": record.label(),
            "server": record.server,
            "kind": record.kind,
            "action": record.last_action,
            "state": OperationState.SUCCEEDED,
        }
        values.update(fields)
        return Operation.objects.create(**values)

    return make


def run_now(operation: Operation, worker: str = TEST_WORKER) -> Operation:
    """Run a queued operation in this process, as a worker would, and reload it."""
    OperationRunner(operation.pk, worker).run()
    operation.refresh_from_db()
    return operation


@pytest.fixture(autouse=True)
def _keep_the_umask() -> Iterator[None]:
    """Undo the umask a test leaves behind (`cli.main` sets 077 for its data
    directory). Left in place, every file the rest of the session writes is
    private, and a test host's /etc/resolv.conf unreadable to apt's sandbox
    user: apt then fails with "Temporary failure resolving"."""
    umask = os.umask(0o022)
    os.umask(umask)
    yield
    os.umask(umask)
