"""The CLI on the local database: every verb, its JSON, exit codes, owners."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User

from brokeforge.accounts.models import ApiToken, AuditEntry
from brokeforge.cli import main
from brokeforge.lifecycle.models import Operation
from brokeforge.servers.models import Server

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def as_json(text: str) -> Any:
    return json.loads(text)


def test_it_registers_lists_changes_and_removes_a_server(
    run: Callable[..., tuple[int, str, str]], user: User
) -> None:
    code, out, _ = run("server", "add", "web-1", "--host", "127.0.0.1")
    assert code == 0
    assert out.startswith("added server web-1 (root@127.0.0.1:22)")
    assert Server.objects.get().owner == user

    code, out, _ = run("server", "change", "web-1", "--rename", "web-2", "--port", "2")
    assert (code, out) == (0, "changed server web-2 (root@127.0.0.1:2)\n")

    code, out, _ = run("server", "list", "--json")
    assert [(s["name"], s["owner"]) for s in as_json(out)] == [("web-2", "alice")]

    code, out, _ = run("server", "show", "web-2")
    assert "owner: alice" in out

    code, out, _ = run("server", "remove", "web-2")
    assert code == 0
    assert not Server.objects.exists()
    actions = list(AuditEntry.objects.order_by("id").values_list("action", "via"))
    assert actions == [
        ("server.add", "cli"),
        ("server.change", "cli"),
        ("server.remove", "cli"),
    ]
    assert set(AuditEntry.objects.values_list("address", flat=True)) == {"cli"}


def test_it_exits_2_with_the_reason_for_bad_input_and_refusals(
    run: Callable[..., tuple[int, str, str]], make_server: Callable[..., Server]
) -> None:
    make_server("web-1")

    bad = run("server", "add", "x", "--host", "$(reboot)")
    taken = run("server", "add", "web-1", "--host", "127.0.0.1")
    nothing = run("server", "change", "web-1")
    run("install", "redis", "--server", "web-1")
    busy = run("update", "redis", "--server", "web-1")
    unknown = run("install", "nginx;id", "--server", "web-1")

    assert bad[0] == 2 and "host: " in bad[2]
    assert taken[0] == 2 and "name: Server with this Name already exists" in taken[2]
    assert nothing[0] == 2 and "say what to change" in nothing[2]
    assert busy == (
        2,
        "",
        "error: Redis on web-1 is pending: wait until its install finishes "
        "(or fails) before asking for anything else\n",
    )
    assert unknown[0] == 2 and "unknown package kind 'nginx;id'" in unknown[2]
    assert Server.objects.count() == 1


def test_it_acts_on_records_and_reads_operations_the_way_the_api_shows_them(
    run: Callable[..., tuple[int, str, str]], make_server: Callable[..., Server]
) -> None:
    make_server("web-1")

    code, out, _ = run("install", "redis", "--server", "web-1", "--json")
    record = as_json(out)
    operation_id = record["operation"]["id"]
    assert (code, record["status"], record["operation"]["state"]) == (
        0,
        "pending",
        "queued",
    )
    Operation.objects.filter(pk=operation_id).update(output="line one\n")

    assert run("status")[1] == (
        "web-1\tredis\tpending\t(waiting for a worker — none is running "
        "(start `brokeforge serve`))\n"
    )
    assert as_json(run("operations", "--json")[1])[0]["id"] == operation_id
    assert f"id: {operation_id}\n" in run("operation", str(operation_id))[1]
    assert run("log", str(operation_id))[1] == (
        f"line one\n\noperation {operation_id} queued\n"
    )
    assert (
        as_json(run("log", str(operation_id), "--offset", "5", "--json")[1])["text"]
        == "one\n"
    )

    code, out, _ = run("cancel", str(operation_id))
    assert code == 0
    assert out.startswith(f"operation {operation_id} cancelled: cancelled by alice")
    code, out, _ = run("status", "--json")
    assert as_json(out)[0]["status"] == "failed"
    code, out, _ = run("retry", "redis", "--server", "web-1")
    assert (
        out
        == f"operation {operation_id + 1}: install Redis on web-1 (attempt 2) queued\n"
    )

    code, out, _ = run("audit")
    lines = out.splitlines()
    assert [line.split("\t")[3] for line in lines] == [
        "record.retry",
        "operation.cancel",
        "record.install",
    ]
    assert lines[0].split("\t")[1:3] == ["alice", "cli cli"]


def test_it_creates_lists_and_revokes_tokens(
    run: Callable[..., tuple[int, str, str]], user: User
) -> None:
    code, out, _ = run("token", "create", "--name", "ci", "--read-only")
    secret = out.splitlines()[-1]
    token = ApiToken.objects.get()
    assert code == 0 and secret.startswith("bf_") and token.read_only
    assert secret not in str(list(ApiToken.objects.values()))

    assert run("token", "list")[1] == f"ci\t{token.prefix}…\tread-only\tnever used\n"
    assert run("token", "create", "--name", "ci")[0] == 2
    assert run("token", "revoke", "ci") == (0, "revoked token ci\n", "")
    assert run("token", "revoke", "ci")[0] == 2
    assert run("token", "list")[1] == ""


def test_it_acts_as_one_account_and_sees_only_its_servers(
    run: Callable[..., tuple[int, str, str]],
    make_server: Callable[..., Server],
    user: User,
) -> None:
    make_server("web-1")
    User.objects.create_user("bob", password="another long passphrase 7")

    ambiguous = run("server", "list")
    as_bob = run("--as", "bob", "server", "list")
    bob_acts = run("--as", "bob", "install", "redis", "--server", "web-1")
    as_alice = run("--as", "alice", "server", "list")
    nobody = run("--as", "carol", "server", "list")

    assert ambiguous[0] == 2 and "say which to act as with --as NAME" in ambiguous[2]
    assert as_bob == (0, "", "")
    assert bob_acts[0] == 2 and "no server named 'web-1'" in bob_acts[2]
    assert as_alice[1].startswith("web-1\t")
    assert nobody[0] == 2 and "no active account named 'carol'" in nobody[2]
    assert not Operation.objects.exists()


def test_token_commands_refuse_a_remote_url(
    run: Callable[..., tuple[int, str, str]], user: User
) -> None:
    code, _, err = run("--url", "http://127.0.0.1:9", "token", "list")

    assert code == 2
    assert "token works on this installation only" in err


def test_it_creates_a_record_of_a_kind_with_many_from_its_options(
    run: Callable[..., tuple[int, str, str]],
    make_server: Callable[..., Server],
    make_database: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = make_server("web-1")
    make_database(server, "mariadb", "active")
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret-Pass\n"))

    code, out, err = run(
        "create", "database", "--server", "web-1", "--engine", "mariadb",
        "--name", "shop", "--user", "shop", "--password-stdin",
    )  # fmt: skip

    assert (code, err) == (0, "")
    assert out.startswith("operation 1: create database shop (user shop) in MariaDB")
    status = run("status")[1]
    assert "web-1\tdatabase #1 (database shop (user shop) in MariaDB on web-1)" in (
        status
    )
    bad = run("create", "database", "--server", "web-1", "--colour", "red")
    assert bad[0] == 2 and "unknown option for create database: --colour" in bad[2]
    assert "database\tDatabase" in run("kinds")[1]
