"""/api/v1/servers: status codes, validation, ownership and the audit trail."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User

from brokeforge.accounts.models import AuditEntry
from brokeforge.lifecycle.models import OperationState, RecordStatus
from brokeforge.packages.service import request_action
from brokeforge.servers.models import Server
from tests.api.conftest import ApiClient


def test_it_lists_only_the_callers_servers(
    api: ApiClient, make_server: Callable[..., Server], bob: User
) -> None:
    make_server("web-1")
    make_server("theirs", owner=bob)

    response = api.get("/servers")

    assert response.status_code == 200
    assert [s["name"] for s in response.json_body] == ["web-1"]
    assert response.json_body[0]["owner"] == "alice"


def test_it_registers_a_server_owned_by_the_caller(api: ApiClient, user: User) -> None:
    response = api.post("/servers", {"name": "db-1", "host": "127.0.0.1", "port": 2222})

    assert response.status_code == 201
    body = response.json_body
    assert (body["name"], body["port"], body["owner"]) == ("db-1", 2222, "alice")
    assert body["public_key"].startswith("ssh-ed25519 ")
    assert Server.objects.get(name="db-1").owner == user
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.username, entry.via, entry.address) == (
        "server.add",
        "alice",
        "api",
        "127.0.0.1",
    )
    assert entry.token_name == f"t-{user.pk}-False"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "host": "127.0.0.1", "port": 0}, "port"),
        ({"name": "x", "host": "127.0.0.1", "port": "22; reboot"}, "port"),
        ({"name": "x"}, "host"),
        ({"name": "x", "host": "h; rm -rf /"}, "host"),
        ({"name": "x", "host": "$(reboot)"}, "host"),
        ({"name": "x", "host": "a\nb"}, "host"),
        ({"name": "../etc", "host": "127.0.0.1"}, "name"),
        ({"name": "x", "host": "127.0.0.1", "user": "root'"}, "user"),
        ({"name": "x", "host": "127.0.0.1", "private_key": "not a key"}, "private_key"),
    ],
)
def test_it_answers_400_naming_the_field_and_saves_nothing(
    api: ApiClient, body: dict[str, object], field: str
) -> None:
    response = api.post("/servers", body)

    assert response.status_code == 400
    assert field in [e["field"] for e in response.json_body["errors"]]
    assert field in response.json_body["detail"]
    assert not Server.objects.exists()


def test_it_refuses_a_taken_name_with_400(
    api: ApiClient, make_server: Callable[..., Server]
) -> None:
    make_server("web-1")

    response = api.post("/servers", {"name": "web-1", "host": "127.0.0.2"})

    assert response.status_code == 400
    assert response.json_body["errors"][0]["field"] == "name"
    assert Server.objects.get().host == "127.0.0.1"


def test_it_changes_a_server_and_keeps_its_pin(
    api: ApiClient, make_server: Callable[..., Server]
) -> None:
    server = make_server("web-1")
    Server.objects.filter(pk=server.pk).update(host_key_fingerprint="SHA256:x")

    response = api.patch(f"/servers/{server.pk}", {"name": "web-2", "port": 2200})

    assert response.status_code == 200
    assert (response.json_body["name"], response.json_body["port"]) == ("web-2", 2200)
    server.refresh_from_db()
    assert (server.name, server.port, server.host_key_fingerprint) == (
        "web-2",
        2200,
        "SHA256:x",
    )
    assert AuditEntry.objects.get().detail == "name web-1 -> web-2, port 22 -> 2200"


def test_it_refuses_a_bad_change_and_changes_nothing(
    api: ApiClient, make_server: Callable[..., Server]
) -> None:
    server = make_server("web-1")

    response = api.patch(f"/servers/{server.pk}", {"name": "ok", "host": "a b"})

    assert response.status_code == 400
    assert response.json_body["errors"][0]["field"] == "host"
    server.refresh_from_db()
    assert (server.name, server.host) == ("web-1", "127.0.0.1")


def test_it_refuses_to_change_or_remove_a_busy_server_with_409(
    api: ApiClient, make_server: Callable[..., Server]
) -> None:
    server = make_server("web-1")
    request_action(server, "redis", "install")

    changed = api.patch(f"/servers/{server.pk}", {"port": 2200})
    removed = api.delete(f"/servers/{server.pk}")

    assert changed.status_code == 409
    assert "unfinished operation" in changed.json_body["detail"]
    assert removed.status_code == 409
    assert "unfinished operation" in removed.json_body["detail"]
    server.refresh_from_db()
    assert server.port == 22
    refused = AuditEntry.objects.filter(outcome="refused")
    assert sorted(refused.values_list("action", flat=True)) == [
        "server.change",
        "server.remove",
    ]


def test_it_removes_a_server(
    api: ApiClient, make_server: Callable[..., Server]
) -> None:
    server = make_server("web-1")

    response = api.delete(f"/servers/{server.pk}")

    assert response.status_code == 204
    assert not Server.objects.exists()
    assert AuditEntry.objects.get().action == "server.remove"


def test_it_reports_a_failed_check_in_the_answer(
    api: ApiClient, make_server: Callable[..., Server], closed_port: int
) -> None:
    server = make_server("web-1", port=closed_port)

    response = api.post(f"/servers/{server.pk}/check")

    assert response.status_code == 200
    body = response.json_body
    assert body["ok"] is False
    assert f"could not connect to 127.0.0.1:{closed_port}" in body["error_message"]
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.outcome) == ("server.check", "failed")


def test_staff_see_every_server_but_change_only_their_own(
    api_for: Callable[..., ApiClient], make_server: Callable[..., Server], bob: User
) -> None:
    server = make_server("web-1")
    bob.is_staff = True
    bob.save()
    staff = api_for(bob)

    listed = staff.get("/servers")
    changed = staff.patch(f"/servers/{server.pk}", {"port": 2200})
    installed = staff.post(f"/servers/{server.pk}/records/redis")

    assert [s["name"] for s in listed.json_body] == ["web-1"]
    assert changed.status_code == 403
    assert "belongs to another account" in changed.json_body["detail"]
    assert installed.status_code == 403
    server.refresh_from_db()
    assert server.port == 22
    assert not server.databases.exists()


def test_a_superuser_changes_any_server(
    api_for: Callable[..., ApiClient], make_server: Callable[..., Server], bob: User
) -> None:
    server = make_server("web-1")
    bob.is_staff = bob.is_superuser = True
    bob.save()

    response = api_for(bob).post(f"/servers/{server.pk}/records/redis")

    assert response.status_code == 202
    assert response.json_body["status"] == RecordStatus.PENDING
    assert response.json_body["operation"]["state"] == OperationState.QUEUED
    assert response.json_body["operation"]["requested_by"] == "bob"
