"""/api/v1/servers/{id}/records/{kind}: install, update, remove, retry."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django_tasks_db.models import DBTaskResult

from brokeforge.accounts.models import AuditEntry
from brokeforge.lifecycle.models import Operation, OperationState, RecordStatus
from brokeforge.packages.models import Database
from brokeforge.servers.models import Server
from tests.api.conftest import ApiClient
from tests.conftest import run_now


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server("web-1")


def test_it_installs_with_202_and_the_pending_record(
    api: ApiClient, server: Server
) -> None:
    response = api.post(f"/servers/{server.pk}/records/redis")

    assert response.status_code == 202
    body = response.json_body
    assert (body["kind"], body["status"], body["error_message"]) == (
        "redis",
        RecordStatus.PENDING,
        "",
    )
    operation = Operation.objects.get()
    assert body["operation"]["id"] == operation.pk
    assert (body["operation"]["action"], body["operation"]["state"]) == (
        "install",
        OperationState.QUEUED,
    )
    assert DBTaskResult.objects.count() == 1
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.target, entry.operation_id) == (
        "record.install",
        "Redis on web-1",
        operation.pk,
    )


def test_it_lists_and_gets_records_with_their_operation(
    api: ApiClient, server: Server
) -> None:
    api.post(f"/servers/{server.pk}/records/redis")

    listed = api.get(f"/servers/{server.pk}/records")
    got = api.get(f"/servers/{server.pk}/records/redis")
    absent = api.get(f"/servers/{server.pk}/records/mariadb")

    assert [r["kind"] for r in listed.json_body] == ["redis"]
    assert got.status_code == 200
    assert got.json_body["operation"]["action"] == "install"
    assert absent.status_code == 404
    assert absent.json_body["detail"] == "MariaDB is not installed on web-1"


@pytest.mark.parametrize("kind", ["nginix", "redis;reboot", "..", "$(id)"])
def test_it_404s_an_unknown_kind(api: ApiClient, server: Server, kind: str) -> None:
    response = api.post(f"/servers/{server.pk}/records/{kind}")

    assert response.status_code == 404
    assert not Operation.objects.exists()


def test_it_refuses_options_a_kind_does_not_take(
    api: ApiClient, server: Server
) -> None:
    response = api.post(
        f"/servers/{server.pk}/records/redis", {"params": {"x": "$(reboot)"}}
    )

    assert response.status_code == 400
    assert response.json_body["errors"] == [
        {"field": "x", "message": "install of Redis takes no options"}
    ]
    assert not Database.objects.exists()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", ""),
        ("post", "/update"),
        ("post", "/retry"),
        ("delete", "?data=keep"),
    ],
)
def test_it_answers_409_on_a_busy_record(
    api: ApiClient, server: Server, method: str, path: str
) -> None:
    api.post(f"/servers/{server.pk}/records/redis")

    response = api.call(method, f"/servers/{server.pk}/records/redis{path}")

    assert response.status_code == 409
    assert response.json_body["detail"] == (
        "Redis on web-1 is pending: wait until its install finishes (or fails) "
        "before asking for anything else"
    )
    assert Operation.objects.count() == 1
    assert Database.objects.get().status == RecordStatus.PENDING


@pytest.mark.django_db(transaction=True)
def test_it_shows_why_a_record_failed_refuses_all_but_retry_and_remove_and_retries(
    api_for: Callable[..., ApiClient],
    make_server: Callable[..., Server],
    closed_port: int,
    user: object,
) -> None:
    api = api_for(user)
    server = make_server("web-1", port=closed_port)
    installed = api.post(f"/servers/{server.pk}/records/redis")
    run_now(Operation.objects.get(pk=installed.json_body["operation"]["id"]))

    failed = api.get(f"/servers/{server.pk}/records/redis")
    update = api.post(f"/servers/{server.pk}/records/redis/update")
    again = api.post(f"/servers/{server.pk}/records/redis")
    retried = api.post(f"/servers/{server.pk}/records/redis/retry")

    reason = f"could not connect to 127.0.0.1:{closed_port}"
    assert failed.json_body["status"] == RecordStatus.FAILED
    assert reason in failed.json_body["error_message"]
    assert reason in failed.json_body["operation"]["error_message"]
    assert failed.json_body["operation"]["state"] == OperationState.FAILED
    assert failed.json_body["allowed_actions"] == ["retry", "remove"]
    for refused in (update, again):
        assert refused.status_code == 409
        assert "failed its last install: use Retry" in refused.json_body["detail"]
    assert retried.status_code == 202
    body = retried.json_body
    assert (body["status"], body["error_message"]) == (RecordStatus.PENDING, "")
    assert (body["operation"]["action"], body["operation"]["attempt"]) == (
        "install",
        2,
    )


def test_it_requires_a_data_choice_to_remove(
    api: ApiClient, server: Server, make_database: Callable[..., Database]
) -> None:
    make_database(server, "redis", RecordStatus.ACTIVE)

    missing = api.delete(f"/servers/{server.pk}/records/redis")
    wrong = api.delete(f"/servers/{server.pk}/records/redis?data=$(rm)")

    for response in (missing, wrong):
        assert response.status_code == 400
        assert response.json_body["errors"][0]["field"] == "data"
    assert Database.objects.get().status == RecordStatus.ACTIVE


@pytest.mark.parametrize(
    ("method", "path", "status", "params"),
    [
        ("post", "/update", RecordStatus.UPDATING, {}),
        ("delete", "?data=keep", RecordStatus.UNINSTALLING, {"data": "keep"}),
        ("delete", "?data=delete", RecordStatus.UNINSTALLING, {"data": "delete"}),
    ],
)
def test_it_updates_and_removes_an_active_record_with_202(
    api: ApiClient,
    server: Server,
    make_database: Callable[..., Database],
    method: str,
    path: str,
    status: str,
    params: dict[str, str],
) -> None:
    make_database(server, "redis", RecordStatus.ACTIVE)

    response = api.call(method, f"/servers/{server.pk}/records/redis{path}")

    assert response.status_code == 202
    assert response.json_body["status"] == status
    assert response.json_body["operation"]["params"] == params
    assert response.json_body["operation"]["state"] == OperationState.QUEUED
