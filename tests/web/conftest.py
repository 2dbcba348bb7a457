"""Fixtures for the page tests: an account, a signed-in client, rows made directly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.test import Client

from brokeforge.lifecycle.models import Operation, OperationState, RecordStatus
from brokeforge.packages.models import Database
from brokeforge.servers.models import Server


@pytest.fixture
def signed_in(client: Client, user: User) -> Client:
    client.force_login(user)
    return client


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server("web-1")


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
