"""A second account gets 404 (or nothing) for the first account's objects,
on every endpoint and every page, and changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from brokeforge.accounts.models import ApiToken, AuditEntry
from brokeforge.accounts.tokens import create_token
from brokeforge.lifecycle.models import Operation, RecordStatus
from brokeforge.packages.models import Database, SqlDatabase
from brokeforge.servers.models import Server
from tests.api.conftest import ApiClient
from tests.web.helpers import plain_text

# (method, path, body); {s} is Alice's server id, {o} her operation id.
ENDPOINTS = [
    ("get", "/servers/{s}", None),
    ("patch", "/servers/{s}", {"port": 2200}),
    ("delete", "/servers/{s}", None),
    ("post", "/servers/{s}/check", None),
    ("get", "/servers/{s}/records", None),
    ("get", "/servers/{s}/records/redis", None),
    ("post", "/servers/{s}/records/mariadb", None),
    ("post", "/servers/{s}/records/redis/update", None),
    ("post", "/servers/{s}/records/redis/retry", None),
    ("delete", "/servers/{s}/records/redis?data=delete", None),
    ("get", "/servers/{s}/records/database/{d}", None),
    ("post", "/servers/{s}/records/database/{d}/update", None),
    ("post", "/servers/{s}/records/database/{d}/retry", None),
    ("delete", "/servers/{s}/records/database/{d}", None),
    ("get", "/operations/{o}", None),
    ("get", "/operations/{o}/output", None),
    ("post", "/operations/{o}/cancel", None),
]


@pytest.fixture
def alices(
    make_server: Callable[..., Server],
    make_database: Callable[..., Database],
    make_operation: Callable[..., Operation],
) -> dict[str, Any]:
    server = make_server("web-1")
    record = make_database(server, "redis", RecordStatus.FAILED, error_message="x")
    operation = make_operation(record, output="secret output", state="queued")
    database = SqlDatabase(server=server, engine="mariadb", name="app", user="app")
    database.set_password("alices-secret-password")
    database.status, database.last_action = RecordStatus.ACTIVE, "install"
    database.save()
    AuditEntry.objects.create(
        user=server.owner, username="alice", via="cli", address="cli", action="x"
    )
    token, _ = create_token(server.owner, "alices", read_only=False)
    return {
        "server": server,
        "operation": operation,
        "token": token,
        "database": database,
    }


def snapshot() -> tuple[Any, ...]:
    return (
        list(Server.objects.values_list("name", "port", "host_key")),
        list(Database.objects.values_list("kind", "status")),
        list(SqlDatabase.objects.values_list("name", "status")),
        list(Operation.objects.values_list("pk", "state")),
        list(ApiToken.objects.values_list("name", "revoked_at")),
    )


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_every_endpoint_404s_another_accounts_object(
    api_for: Callable[..., ApiClient],
    bob: User,
    alices: dict[str, Any],
    method: str,
    path: str,
    body: Any,
) -> None:
    api = api_for(bob)
    before = snapshot()
    url = path.format(
        s=alices["server"].pk, o=alices["operation"].pk, d=alices["database"].pk
    )

    response = api.call(method, url, body)

    assert response.status_code == 404
    assert "web-1" not in response.content.decode()
    assert snapshot() == before


def test_lists_leave_out_another_accounts_objects(
    api_for: Callable[..., ApiClient], bob: User, alices: dict[str, Any]
) -> None:
    api = api_for(bob)

    for path in ("/servers", "/operations", "/audit"):
        response = api.get(path)

        assert response.status_code == 200
        assert response.json_body == [], path
    filtered = api.get(f"/operations?server_id={alices['server'].pk}")
    assert filtered.json_body == []


def test_the_api_through_a_browser_session_isolates_too(
    client: Client, bob: User, alices: dict[str, Any]
) -> None:
    client.force_login(bob)

    response = client.get(f"/api/v1/servers/{alices['server'].pk}")

    assert response.status_code == 404


def _page_requests(alices: dict[str, Any]) -> list[tuple[str, str, dict[str, str]]]:
    name = alices["server"].name
    record = alices["database"]
    posts = [
        reverse("record-secret", args=[name, "database", record.pk]),
        reverse("record-action", args=[name, "database", record.pk, "remove"]),
        reverse("server-check", args=[name]),
        reverse("server-repin", args=[name]),
        reverse("server-remove", args=[name]),
        reverse("token-revoke", args=[alices["token"].pk]),
    ] + [
        reverse("database-action", args=[name, "redis", action])
        for action in ("install", "update", "retry", "remove")
    ]
    operation = alices["operation"].pk
    gets = [
        reverse("server-detail", args=[name]),
        reverse("server-events", args=[name]),
        reverse("record-row", args=[name, "db-redis"]),
        reverse("kind-table", args=[name, "database"]),
        reverse("server-operations", args=[name]),
        reverse("server-operations-table", args=[name]),
        reverse("operation-detail", args=[operation]),
        reverse("operation-output", args=[operation]),
    ]
    posts.append(reverse("operation-cancel", args=[operation]))
    return [("get", url, {}) for url in gets] + [
        ("post", url, {"data": "delete", "confirm": "1"}) for url in posts
    ]


def test_every_page_404s_another_accounts_object(
    client: Client, bob: User, alices: dict[str, Any]
) -> None:
    client.force_login(bob)
    before = snapshot()

    for method, url, data in _page_requests(alices):
        response = getattr(client, method)(url, data)

        assert response.status_code == 404, url
        assert "alices-secret-password" not in response.content.decode()
    assert snapshot() == before


def test_the_list_pages_leave_out_another_accounts_objects(
    client: Client, bob: User, alices: dict[str, Any]
) -> None:
    client.force_login(bob)

    servers = plain_text(client.get(reverse("server-list")).content)
    audit = plain_text(client.get(reverse("audit-log")).content)
    tokens = plain_text(client.get(reverse("token-list")).content)

    assert "No servers yet" in servers and "127.0.0.1" not in servers
    # Bob's own sign-in only; nothing Alice did.
    assert "alice" not in audit and "bob web unknown account.sign_in" in audit
    assert "alices" not in tokens and "No tokens yet." in tokens


def test_the_owner_reads_a_secret_and_staff_cannot(
    client: Client, user: User, bob: User, alices: dict[str, Any]
) -> None:
    url = reverse(
        "record-secret", args=[alices["server"].name, "database", alices["database"].pk]
    )
    bob.is_staff = True
    bob.save()

    client.force_login(bob)
    staff = client.post(url)
    client.force_login(user)
    owner = client.post(url)

    assert staff.status_code == 403
    assert "alices-secret-password" not in staff.content.decode()
    assert owner.status_code == 200
    assert "alices-secret-password" in owner.content.decode()
    entry = AuditEntry.objects.filter(action="record.secret").get()
    assert (entry.username, entry.via) == ("alice", "web")
