"""A kind's wrong option answers 400 naming the option; what the record's
state refuses still answers 409. Each parent is active, so the same request
with a good value is accepted: the 400 is about the option alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from brokeforge.accounts.models import AuditEntry
from brokeforge.lifecycle.models import Operation, RecordStatus
from brokeforge.packages.models import (
    CronTask,
    Database,
    FirewallRule,
    PhpVersion,
    Site,
    SqlDatabase,
    SupervisorProgram,
)
from brokeforge.packages.registry import KINDS
from brokeforge.servers.models import Server
from tests.api.conftest import ApiClient

GOOD: dict[str, dict[str, Any]] = {
    "site": {"domain": "shop.example.com"},
    "cron_task": {"name": "backup", "schedule": "30 2 * * 1-5", "command": "true"},
    "firewall-rule": {"port": "8080", "protocol": "tcp", "source": "any"},
    "database": {"engine": "mariadb", "name": "shop"},
    "php": {"version": "8.2"},
    "supervisor_program": {"name": "worker", "command": "sleep 60"},
}

# (kind, the wrong options, the field named, words of its message)
WRONG: list[tuple[str, dict[str, Any], str, str]] = [
    ("site", {"domain": "shop;rm -rf /"}, "domain", "is not a domain name"),
    ("site", {"domain": "../etc"}, "domain", "is not a domain name"),
    ("site", {"aliases": "ok.example.com $(id)"}, "aliases", "alias"),
    ("site", {"web_root": "/etc"}, "web_root", "inside /var/www or /srv"),
    ("site", {"php_version": "8.2'"}, "php_version", "PHP version"),
    ("cron_task", {"schedule": "61 * * * *"}, "schedule", "minute"),
    ("cron_task", {"schedule": "* * * *"}, "schedule", "five fields"),
    ("cron_task", {"command": "true\nrm -rf /"}, "command", "one line"),
    ("cron_task", {"name": "a/../b"}, "name", "task name"),
    ("cron_task", {"user": "root;id"}, "user", "not a valid user name"),
    ("firewall-rule", {"port": "70000"}, "port", "65535"),
    ("firewall-rule", {"port": "22;id"}, "port", "65535"),
    ("firewall-rule", {"source": "10.0.0.1/8"}, "source", "host bits set"),
    ("firewall-rule", {"source": "$(curl x)"}, "source", "address or network"),
    ("firewall-rule", {"protocol": "icmp"}, "protocol", "tcp"),
    ("database", {"name": "x; drop"}, "name", "database name"),
    ("database", {"name": "mysql"}, "name", "reserved"),
    ("database", {"engine": "oracle"}, "engine", "mariadb, mysql or postgresql"),
    ("database", {"user": "a'b", "password": "longenough"}, "user", "user name"),
    ("php", {"version": "8.2; id"}, "version", "major.minor"),
    ("php", {"default_cli": "maybe"}, "default_cli", "yes or no"),
    ("supervisor_program", {"command": "a\nb"}, "command", "one line"),
    ("supervisor_program", {"directory": "/srv/../etc"}, "directory", "'..'"),
    ("supervisor_program", {"numprocs": "0"}, "numprocs", "between 1 and 100"),
    ("supervisor_program", {"stopsignal": "KILL;id"}, "stopsignal", "stop signal"),
    ("supervisor_program", {"owner": "x"}, "owner", "unknown option"),
]


@pytest.fixture
def server(
    make_server: Callable[..., Server], make_database: Callable[..., Database]
) -> Server:
    server = make_server("web-1")
    for parent in ("nginx", "scheduler", "firewall", "mariadb", "supervisor"):
        make_database(server, parent, RecordStatus.ACTIVE)
    return server


def _changed() -> list[int]:
    return [
        model.objects.count()
        for model in (
            Operation,
            Site,
            CronTask,
            FirewallRule,
            SqlDatabase,
            PhpVersion,
            SupervisorProgram,
        )
    ]


@pytest.mark.parametrize(("kind", "wrong", "field", "words"), WRONG)
def test_a_wrong_option_answers_400_naming_its_field_and_changes_nothing(
    api: ApiClient,
    server: Server,
    kind: str,
    wrong: dict[str, Any],
    field: str,
    words: str,
) -> None:
    before = _changed()

    response = api.post(
        f"/servers/{server.pk}/records/{kind}", {"params": {**GOOD[kind], **wrong}}
    )

    assert response.status_code == 400, response.json_body
    errors = response.json_body["errors"]
    assert [e["field"] for e in errors] == [field]
    assert words in errors[0]["message"]
    assert response.json_body["detail"] == f"{field}: {errors[0]['message']}"
    assert _changed() == before
    refusal = AuditEntry.objects.get()
    assert refusal.outcome == "refused"
    assert words in refusal.detail


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_the_same_request_with_good_options_is_accepted(
    api: ApiClient, server: Server, kind: str
) -> None:
    response = api.post(f"/servers/{server.pk}/records/{kind}", {"params": GOOD[kind]})

    assert response.status_code == 202, response.json_body
    assert KINDS[kind].records(server).count() == 1


def test_an_option_the_action_does_not_take_answers_400(
    api: ApiClient, server: Server, make_database: Callable[..., Database]
) -> None:
    make_database(server, "redis", RecordStatus.ACTIVE)

    response = api.post(
        f"/servers/{server.pk}/records/redis/update", {"params": {"port": "1"}}
    )

    assert response.status_code == 400
    assert response.json_body["errors"] == [
        {"field": "port", "message": "update of Redis takes no options"}
    ]
    assert not Operation.objects.exists()


def test_a_refusal_by_state_still_answers_409_naming_no_field(
    api: ApiClient, make_server: Callable[..., Server]
) -> None:
    bare = make_server("bare")  # no cron daemon: its tasks are refused by state

    response = api.post(
        f"/servers/{bare.pk}/records/cron_task", {"params": GOOD["cron_task"]}
    )

    assert response.status_code == 409
    assert response.json_body["errors"] == []
    assert "to be active" in response.json_body["detail"]
    assert not CronTask.objects.exists()


def test_a_busy_record_is_refused_by_state_before_its_options(
    api: ApiClient, server: Server, make_database: Callable[..., Database]
) -> None:
    make_database(server, "redis", RecordStatus.PENDING)

    response = api.post(
        f"/servers/{server.pk}/records/redis/update", {"params": {"port": "1"}}
    )

    assert response.status_code == 409
    assert response.json_body["errors"] == []
    assert "pending" in response.json_body["detail"]


def test_a_conflict_still_answers_409(api: ApiClient, server: Server) -> None:
    first = api.post(
        f"/servers/{server.pk}/records/cron_task", {"params": GOOD["cron_task"]}
    )

    again = api.post(
        f"/servers/{server.pk}/records/cron_task", {"params": GOOD["cron_task"]}
    )

    assert first.status_code == 202
    assert again.status_code == 409
    assert "exists already" in again.json_body["detail"]
    assert CronTask.objects.count() == 1
