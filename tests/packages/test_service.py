"""The generic packages service: records of any kind, dependencies, options.

These run against the state machine only (no host): what a request is
refused for, what it stores, and what an operation's params show.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from brokeforge.lifecycle.errors import ActionRefused
from brokeforge.lifecycle.models import Action, RecordStatus
from brokeforge.packages import registry
from brokeforge.packages.base import PackageKind
from brokeforge.packages.models import Database, PhpVersion, SqlDatabase
from brokeforge.packages.service import (
    dependents,
    families,
    request_action,
)
from brokeforge.servers.models import Server

pytestmark = pytest.mark.django_db


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server("web-1")


def engine(server: Server, kind: str = "mariadb", status: str = "active") -> Database:
    return Database.objects.create(
        server=server, kind=kind, status=status, last_action="install"
    )


def create_db(server: Server, **params: str) -> SqlDatabase:
    operation = request_action(server, "database", "create", params=params)
    return SqlDatabase.objects.get(pk=operation.record_id)


def test_it_refuses_a_database_until_its_engine_is_installed(server: Server):
    with pytest.raises(ActionRefused) as refused:
        request_action(
            server, "database", "create", params={"engine": "mariadb", "name": "app"}
        )

    assert str(refused.value) == (
        "Database needs MariaDB on web-1 to be active, and it is not installed: "
        "install it first"
    )
    assert not SqlDatabase.objects.exists()


def test_it_refuses_a_database_while_its_engine_failed(server: Server):
    engine(server, "postgresql", RecordStatus.FAILED)

    with pytest.raises(
        ActionRefused, match="PostgreSQL on web-1 to be active, and it is failed"
    ):
        create_db(server, engine="postgresql", name="app")

    assert not SqlDatabase.objects.exists()


def test_it_creates_a_database_keeping_the_password_out_of_the_params(server: Server):
    engine(server)

    operation = request_action(
        server,
        "database",
        "create",
        params={
            "engine": "mariadb",
            "name": "app",
            "user": "app_rw",
            "password": "s3cret'pw\"x",
        },
    )

    record = SqlDatabase.objects.get()
    assert record.status == RecordStatus.PENDING
    assert record.label() == "database app (user app_rw) in MariaDB on web-1"
    assert operation.action == Action.INSTALL
    assert operation.params == {
        "id": record.pk,
        "engine": "mariadb",
        "name": "app",
        "user": "app_rw",
    }
    assert "s3cret" not in record.password_encrypted
    assert record.password() == "s3cret'pw\"x"


def test_it_generates_a_password_when_none_is_given(server: Server):
    engine(server)

    record = create_db(server, engine="mariadb", name="app", user="app")

    assert len(record.password()) == 32
    assert (
        record.password()
        != create_db(server, engine="mariadb", name="app2", user="app2").password()
    )


@pytest.mark.parametrize(
    ("params", "complaint"),
    [
        (
            {"engine": "mariadb", "name": "app;drop"},
            "database name 'app;drop' is not allowed",
        ),
        (
            {"engine": "mariadb", "name": "$(reboot)"},
            "database name '$(reboot)' is not allowed",
        ),
        ({"engine": "mariadb", "name": "a\nb"}, "is not allowed"),
        ({"engine": "mariadb", "name": "../etc"}, "is not allowed"),
        ({"engine": "mariadb", "name": "a'b"}, "is not allowed"),
        ({"engine": "mariadb", "name": 'a"b'}, "is not allowed"),
        ({"engine": "mariadb", "name": "a`b"}, "is not allowed"),
        ({"engine": "mariadb", "name": "App"}, "is not allowed"),
        ({"engine": "mariadb", "name": "x" * 64}, "is not allowed"),
        ({"engine": "mariadb", "name": "mysql"}, "'mysql' is reserved"),
        ({"engine": "mariadb", "name": ""}, "give the database name"),
        (
            {"engine": "mariadb", "name": "app", "user": "u;id"},
            "user name 'u;id' is not allowed",
        ),
        ({"engine": "mariadb", "name": "app", "user": "root"}, "'root' is reserved"),
        (
            {"engine": "mariadb", "name": "app", "user": "u", "password": "short"},
            "8 to 128",
        ),
        (
            {
                "engine": "mariadb",
                "name": "app",
                "user": "u",
                "password": "with space1",
            },
            "printable ASCII",
        ),
        (
            {
                "engine": "mariadb",
                "name": "app",
                "user": "u",
                "password": "line\nbreak1",
            },
            "printable ASCII",
        ),
        (
            {"engine": "mariadb", "name": "app", "password": "lonely-password"},
            "needs a user",
        ),
        ({"engine": "oracle", "name": "app"}, "choose the engine"),
        ({"engine": "mariadb", "name": "app", "owner": "x"}, "unknown option: owner"),
    ],
)
def test_it_refuses_bad_options_and_changes_nothing(
    server: Server, params: dict[str, str], complaint: str
):
    engine(server)

    with pytest.raises(
        ActionRefused,
        match=re.escape(complaint),
    ):
        request_action(server, "database", "create", params=params)

    assert not SqlDatabase.objects.exists()
    assert not server.operations.exists()


def test_it_refuses_a_second_database_or_user_of_the_same_name(server: Server):
    engine(server)
    create_db(server, engine="mariadb", name="app", user="app")

    with pytest.raises(ActionRefused, match=r"database app .* exists already"):
        create_db(server, engine="mariadb", name="app")
    with pytest.raises(ActionRefused, match="exists already"):
        create_db(server, engine="mariadb", name="other", user="app")

    assert SqlDatabase.objects.count() == 1


def test_it_asks_which_record_an_action_on_a_many_kind_means(server: Server):
    engine(server)
    record = create_db(server, engine="mariadb", name="app")

    with pytest.raises(ActionRefused, match="say which Database on web-1 you mean"):
        request_action(server, "database", "drop")
    with pytest.raises(ActionRefused, match="Database #999 is not on web-1"):
        request_action(server, "database", "drop", record_id=999)
    with pytest.raises(ActionRefused, match="is pending"):
        request_action(server, "database", "drop", record_id=record.pk)


def test_it_refuses_to_remove_an_engine_that_databases_depend_on(server: Server):
    mariadb = engine(server)
    SqlDatabase.objects.create(
        server=server,
        engine="mariadb",
        name="app",
        status="active",
        last_action="install",
    )

    with pytest.raises(ActionRefused) as refused:
        request_action(server, "mariadb", "remove", params={"data": "keep"})

    assert str(refused.value) == (
        "MariaDB on web-1 cannot be removed while database app in MariaDB on "
        "web-1 depend on it: remove those first"
    )
    mariadb.refresh_from_db()
    assert mariadb.status == RecordStatus.ACTIVE
    assert [d.label() for d in dependents(mariadb)] == [
        "database app in MariaDB on web-1"
    ]


def test_it_drops_a_database_with_its_identity_in_the_params(server: Server):
    engine(server)
    record = SqlDatabase.objects.create(
        server=server,
        engine="mariadb",
        name="app",
        user="app",
        status="active",
        last_action="install",
    )

    operation = request_action(server, "database", "drop", record_id=record.pk)

    record.refresh_from_db()
    assert record.status == RecordStatus.UNINSTALLING
    assert operation.action == Action.REMOVE
    assert operation.params == {
        "id": record.pk,
        "engine": "mariadb",
        "name": "app",
        "user": "app",
    }


def test_it_lists_a_servers_records_family_by_family(server: Server):
    engine(server)
    create_db(server, engine="mariadb", name="app")

    sections = families(server)

    databases = sections[0]
    assert databases.name == "databases"
    by_kind = {k.kind.name: [r.label() for r in k.records] for k in databases.kinds}
    assert by_kind["mariadb"] == ["MariaDB on web-1"]
    assert by_kind["database"] == ["database app in MariaDB on web-1"]
    assert by_kind["postgresql"] == []


def test_it_refuses_to_register_a_kind_of_an_unknown_family():
    class Odd(PackageKind):
        name = "odd"
        label = "Odd"
        family = "gadgets"

    with pytest.raises(ValueError, match="unknown family 'gadgets'"):
        registry.register(Odd())
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(registry.KINDS["redis"])


def test_it_refuses_a_second_php_version_of_the_same_number(server: Server):
    request_action(server, "php", "install", params={"version": "8.2"})

    with pytest.raises(ActionRefused, match=r"PHP 8\.2 .* exists already"):
        request_action(server, "php", "install", params={"version": "8.2"})

    assert PhpVersion.objects.filter(server=server).count() == 1
