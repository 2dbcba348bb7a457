"""The CLI's verbs on kinds with many records: create, drop, status, kinds."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest

from brokeforge import cli
from brokeforge.packages.models import Database, SqlDatabase
from brokeforge.servers.models import Server

pytestmark = pytest.mark.django_db


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    server = make_server("web-1")
    Database.objects.create(
        server=server, kind="mariadb", status="active", last_action="install"
    )
    return server


def test_it_creates_a_database_and_prints_the_generated_password_once(
    server: Server, capsys: pytest.CaptureFixture[str]
):
    code = cli.main(
        [
            "create",
            "database",
            "--server",
            "web-1",
            "--engine",
            "mariadb",
            "--name",
            "app",
            "--user",
            "app",
        ]
    )

    assert code == 0
    record = SqlDatabase.objects.get()
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(
        "create database app (user app) in MariaDB on web-1 (attempt 1) queued"
    )
    assert out[1] == (
        f"generated password (shown once here; keep it): {record.password()}"
    )
    operation = record.current_operation()
    assert operation is not None
    assert operation.params == {
        "id": record.pk,
        "engine": "mariadb",
        "name": "app",
        "user": "app",
    }


def test_it_reads_a_given_password_from_stdin_and_does_not_echo_it(
    server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("sys.stdin", io.StringIO("Given-pass'word\n"))

    code = cli.main(
        [
            "create",
            "database",
            "--server",
            "web-1",
            "--engine",
            "mariadb",
            "--name",
            "app",
            "--user",
            "app",
            "--password-stdin",
        ]
    )

    assert code == 0
    assert SqlDatabase.objects.get().password() == "Given-pass'word"
    assert "Given-pass" not in capsys.readouterr().out


def test_it_names_the_record_to_drop_and_refuses_unknown_options(
    server: Server, capsys: pytest.CaptureFixture[str]
):
    record = SqlDatabase.objects.create(
        server=server,
        engine="mariadb",
        name="app",
        status="active",
        last_action="install",
    )

    assert cli.main(["drop", "database", "--server", "web-1"]) == 2
    assert "say which Database on web-1 you mean" in capsys.readouterr().err

    assert cli.main(["create", "database", "--server", "web-1", "--owner", "x"]) == 2
    assert capsys.readouterr().err == (
        "error: unknown option for create database: --owner x "
        "(it takes --engine --name --user)\n"
    )

    assert (
        cli.main(["drop", "database", "--server", "web-1", "--id", str(record.pk)]) == 0
    )
    record.refresh_from_db()
    assert record.status == "uninstalling"
    capsys.readouterr()

    assert cli.main(["status", "--server", "web-1"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"web-1\tdatabase #{record.pk} (database app in MariaDB on web-1)"
        "\tuninstalling\t(waiting for a worker — none is running "
        "(start `brokeforge serve`))",
        "web-1\tmariadb\tactive",
    ]


def test_it_lists_the_kinds_and_their_options(capsys: pytest.CaptureFixture[str]):
    assert cli.main(["kinds"]) == 0

    out = capsys.readouterr().out
    assert "cron_task\tScheduled task (scheduler, many per server)" in out
    assert "    --schedule\tSchedule (required)" in out
    assert "    --password-stdin\tPassword (optional)" in out


def test_it_refuses_a_wrong_option_with_its_message_and_exit_status_2(
    server: Server, capsys: pytest.CaptureFixture[str]
):
    code = cli.main(
        [
            "create",
            "database",
            "--server",
            "web-1",
            "--engine",
            "mariadb",
            "--name",
            "x;$(id)",
        ]
    )

    assert code == 2
    assert capsys.readouterr().err == (
        "error: database name 'x;$(id)' is not allowed: use up to 63 lowercase "
        "letters, digits and underscores, not starting with a digit\n"
    )
    assert not SqlDatabase.objects.exists()
