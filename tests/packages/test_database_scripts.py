"""Database scripts as the host receives them (scripted SSH server): the
password travels on stdin, never on the command line, and MySQL gets the
same SQL as MariaDB through its own client."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from brokeforge.lifecycle.models import OperationState, RecordStatus
from brokeforge.packages.models import Database, SqlDatabase
from brokeforge.packages.service import request_action
from brokeforge.packages.sql_database import mysql_literal, pg_literal
from brokeforge.servers.models import Server
from tests.conftest import run_now
from tests.lifecycle.test_runner import DEBIAN_12, FACTS
from tests.testhosts.fixtures import ScriptedSSHTestServer

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "it's\"a\\secret$(id)"


@pytest.fixture
def server(
    make_server: Callable[..., Server], scripted_ssh: ScriptedSSHTestServer
) -> Server:
    key = scripted_ssh.client_key.export_private_key().decode()
    server = make_server("s1", port=scripted_ssh.port, private_key=key)
    Database.objects.create(
        server=server, kind="mysql", status="active", last_action="install"
    )
    scripted_ssh.add_rule(FACTS, stdout=DEBIAN_12)
    return server


def test_it_creates_a_mysql_database_with_the_password_on_stdin_only(
    server: Server, scripted_ssh: ScriptedSSHTestServer
):
    scripted_ssh.add_rule(
        "mysql --batch", stdout="checked: database app, user app\n", delay=0.5
    )
    scripted_ssh.add_rule(".")

    operation = run_now(
        request_action(
            server,
            "database",
            "create",
            params={
                "engine": "mysql",
                "name": "app",
                "user": "app",
                "password": PASSWORD,
            },
        )
    )

    assert operation.state == OperationState.SUCCEEDED, operation.error_message
    assert SqlDatabase.objects.get().status == RecordStatus.ACTIVE
    script = next(e for e in scripted_ssh.execs if "mysql --batch" in e.command)
    assert "secret" not in script.command
    assert bytes(script.stdin).decode() == (
        "CREATE DATABASE IF NOT EXISTS `app`;\n"
        "CREATE USER IF NOT EXISTS 'app'@'localhost' IDENTIFIED BY "
        "'it\\'s\"a\\\\secret$(id)';\n"
        "ALTER USER 'app'@'localhost' IDENTIFIED BY 'it\\'s\"a\\\\secret$(id)';\n"
        "GRANT ALL PRIVILEGES ON `app`.* TO 'app'@'localhost';\n"
    )
    assert "secret" not in operation.output
    assert "FROM mysql.user WHERE User = " in script.command


def test_it_fails_a_drop_with_the_servers_words_and_keeps_the_record_failed(
    server: Server, scripted_ssh: ScriptedSSHTestServer
):
    record = SqlDatabase.objects.create(
        server=server,
        engine="mysql",
        name="app",
        status="active",
        last_action="install",
    )
    scripted_ssh.add_rule(
        "mysql --batch",
        stderr="ERROR 2002 (HY000): Can't connect to local server through socket\n",
        exit_status=1,
    )

    operation = run_now(request_action(server, "database", "drop", record_id=record.pk))

    record.refresh_from_db()
    assert operation.state == OperationState.FAILED
    assert record.status == RecordStatus.FAILED
    assert record.error_message == (
        "ERROR 2002 (HY000): Can't connect to local server through socket "
        "(exit status 1)"
    )


def test_it_quotes_passwords_for_each_engine():
    assert mysql_literal("a'b\\c") == "'a\\'b\\\\c'"
    assert pg_literal("a'b\\c") == "'a''b\\c'"
