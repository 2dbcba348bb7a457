"""Kinds with many records per server, through the same endpoints: a
database inside MariaDB is created at /records/database and named by id."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from brokeforge.accounts.models import AuditEntry
from brokeforge.lifecycle.models import Operation, RecordStatus
from brokeforge.packages.models import Database
from brokeforge.servers.models import Server
from tests.api.conftest import ApiClient

DB = {"engine": "mariadb", "name": "shop", "user": "shop", "password": "pw;$(x)'\"`"}


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server("web-1")


def test_it_refuses_a_database_while_its_engine_is_not_active(
    api: ApiClient, server: Server
) -> None:
    response = api.post(f"/servers/{server.pk}/records/database", {"params": DB})

    assert response.status_code == 409
    assert "needs MariaDB on web-1 to be active" in response.json_body["detail"]
    assert not Operation.objects.exists()


def test_it_creates_gets_and_drops_a_database_by_id(
    api: ApiClient, server: Server, make_database: Callable[..., Database]
) -> None:
    make_database(server, "mariadb", RecordStatus.ACTIVE)

    created = api.post(f"/servers/{server.pk}/records/database", {"params": DB})
    record_id = created.json_body["id"]
    by_kind = api.get(f"/servers/{server.pk}/records/database")
    by_id = api.get(f"/servers/{server.pk}/records/database/{record_id}")
    other_id = api.get(f"/servers/{server.pk}/records/database/{record_id + 9}")
    listed = api.get(f"/servers/{server.pk}/records")

    assert created.status_code == 202
    body = created.json_body
    assert (body["kind"], body["status"], body["operation"]["action"]) == (
        "database",
        RecordStatus.PENDING,
        "install",
    )
    # The password reaches neither the answer, the operation nor the audit log.
    assert "pw;" not in created.content.decode()
    assert "pw;" not in str(list(Operation.objects.values_list("params")))
    assert "pw;" not in str(list(AuditEntry.objects.values_list("detail")))
    assert by_kind.status_code == 404
    assert "has many records per server" in by_kind.json_body["detail"]
    assert by_id.json_body["label"] == "database shop (user shop) in MariaDB on web-1"
    assert other_id.status_code == 404
    assert sorted(r["kind"] for r in listed.json_body) == ["database", "mariadb"]

    busy = api.delete(f"/servers/{server.pk}/records/database/{record_id}")
    assert busy.status_code == 409


def test_it_refuses_bad_options_of_a_kind(
    api: ApiClient, server: Server, make_database: Callable[..., Database]
) -> None:
    make_database(server, "mariadb", RecordStatus.ACTIVE)

    for params, field in (
        ({**DB, "name": "x; drop"}, "name"),
        ({**DB, "name": "../etc"}, "name"),
        ({**DB, "extra": "1"}, "extra"),
        ({**DB, "password": "two\nlines"}, "password"),
    ):
        response = api.post(
            f"/servers/{server.pk}/records/database", {"params": params}
        )

        assert response.status_code == 400, params
        assert [e["field"] for e in response.json_body["errors"]] == [field]
    assert not Operation.objects.exists()


def test_kinds_lists_every_kind_and_its_options(api: ApiClient) -> None:
    response = api.get("/kinds")

    kinds = {k["name"]: k for k in response.json_body}
    assert {"redis", "mariadb", "database"} <= set(kinds)
    assert kinds["database"]["many"] is True
    assert [f["name"] for f in kinds["database"]["fields"]] == [
        "engine",
        "name",
        "user",
        "password",
    ]
    assert kinds["database"]["fields"][3]["secret"] is True


def test_it_shows_a_generated_password_once_in_the_creating_answer(
    api: ApiClient, server: Server, make_database: Callable[..., Database]
) -> None:
    from brokeforge.packages.models import SqlDatabase

    make_database(server, "mariadb", RecordStatus.ACTIVE)
    params = {"engine": "mariadb", "name": "app", "user": "app"}

    created = api.post(f"/servers/{server.pk}/records/database", {"params": params})
    record = SqlDatabase.objects.get()
    again = api.get(f"/servers/{server.pk}/records/database/{record.pk}")

    assert created.json_body["generated_secret"] == record.password()
    assert len(record.password()) >= 16
    assert again.json_body["generated_secret"] is None
    assert record.password() not in again.content.decode()


def test_it_removes_a_site_with_the_files_choice(
    api: ApiClient, server: Server
) -> None:
    from brokeforge.packages.models import Site

    site = Site.objects.create(
        server=server,
        domain="shop.example.com",
        web_root="/var/www/shop.example.com",
        status=RecordStatus.ACTIVE,
        last_action="install",
    )
    url = f"/servers/{server.pk}/records/site/{site.pk}"

    unchosen = api.delete(url)
    chosen = api.delete(f"{url}?files=delete")

    assert unchosen.status_code == 400
    assert unchosen.json_body["errors"][0]["field"] == "files"
    assert chosen.status_code == 202, chosen.json_body
    assert chosen.json_body["status"] == RecordStatus.UNINSTALLING
    assert Operation.objects.get().params["files"] == "delete"
