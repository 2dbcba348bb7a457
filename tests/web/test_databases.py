"""The databases table: badges, buttons, and the action endpoint."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django_tasks_db.models import DBTaskResult

from brokeforge.lifecycle.machine import refusal
from brokeforge.lifecycle.models import Event, Operation, OperationState, RecordStatus
from brokeforge.packages.models import Database
from brokeforge.servers.models import Server
from tests.web.helpers import action_url, page_text, plain_text

ACTIONS = ("install", "update", "remove", "retry")


def offered_actions(content: bytes, server: Server, kind: str) -> set[str]:
    text = content.decode()
    return {a for a in ACTIONS if f'action="{action_url(server, kind, a)}"' in text}


def snapshot() -> tuple[list[tuple[str, str, str]], int, int, int]:
    """Everything a request could change: records, operations, events, tasks."""
    records = list(
        Database.objects.order_by("kind").values_list("kind", "status", "last_action")
    )
    return (
        records,
        Operation.objects.count(),
        Event.objects.count(),
        DBTaskResult.objects.count(),
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (RecordStatus.PENDING, set()),
        (RecordStatus.INSTALLING, set()),
        (RecordStatus.UPDATING, set()),
        (RecordStatus.UNINSTALLING, set()),
        (RecordStatus.ACTIVE, {"update", "remove"}),
        (RecordStatus.FAILED, {"retry", "remove"}),
    ],
)
def test_it_shows_only_the_buttons_the_status_allows(
    signed_in: Client,
    server: Server,
    make_database: Callable[..., Database],
    status: str,
    expected: set[str],
) -> None:
    make_database(server, "redis", status)

    response = signed_in.get(reverse("server-detail", args=[server.name]))

    assert response.status_code == 200
    assert offered_actions(response.content, server, "redis") == expected
    assert f'badge-{status}"><span aria-hidden="true">' in response.content.decode()
    assert f"{status}</span>" in response.content.decode()
    # The kinds without a record offer Install and nothing else.
    assert offered_actions(response.content, server, "mariadb") == {"install"}
    assert offered_actions(response.content, server, "mysql") == {"install"}


def test_it_asks_what_happens_to_the_data_on_a_confirm_step_before_remove(
    signed_in: Client, server: Server, make_database: Callable[..., Database]
) -> None:
    make_database(server, "redis", RecordStatus.ACTIVE)
    before = snapshot()

    page = signed_in.get(reverse("server-detail", args=[server.name]))
    # The row's Remove only leads to the confirm step: a GET form.
    url = action_url(server, "redis", "remove")
    assert f'<form method="get" action="{url}">' in page.content.decode()
    response = signed_in.get(url)

    text = response.content.decode()
    assert response.status_code == 200
    assert 'name="data" value="keep" required' in text
    assert 'name="data" value="delete" required' in text
    assert "keep (moved to /var/backups/brokeforge)" in text
    # Neither answer is chosen for the person.
    radios = [line for line in text.splitlines() if 'name="data"' in line]
    assert radios
    assert not any(" checked" in line for line in radios)
    assert "Remove Redis from web-1?" in page_text(response.content)
    assert snapshot() == before


def test_it_does_not_remove_without_the_confirm_step(
    signed_in: Client, server: Server, make_database: Callable[..., Database]
) -> None:
    make_database(server, "redis", RecordStatus.ACTIVE)
    before = snapshot()

    response = signed_in.post(action_url(server, "redis", "remove"), {"data": "delete"})

    assert response.status_code == 200
    assert re.search(r'value="delete"[^>]* checked', response.content.decode())
    assert snapshot() == before


def test_it_shows_the_first_lines_of_a_failed_records_error_and_links_the_rest(
    signed_in: Client,
    server: Server,
    make_database: Callable[..., Database],
    make_operation: Callable[..., Operation],
) -> None:
    error = (
        "E: Unable to locate package redis-server\n"
        "dpkg said <nothing> & 'gave up'\nthird\nfourth\nfifth line, not shown"
    )
    record = make_database(server, "redis", RecordStatus.FAILED, error_message=error)
    operation = make_operation(record, state=OperationState.FAILED, error_message=error)

    response = signed_in.get(reverse("server-detail", args=[server.name]))

    text = page_text(response.content)
    assert error.rsplit("\n", 1)[0] in text
    assert "fifth line, not shown" not in text
    assert b"<nothing>" not in response.content
    assert b"dpkg said &lt;nothing&gt; &amp; &#x27;gave up&#x27;" in response.content
    link = reverse("operation-detail", args=[operation.pk])
    assert (
        f'href="{link}">Full error and output (operation #{operation.pk})</a>' in text
    )
    full = signed_in.get(link)
    assert error in page_text(full.content)


def test_it_says_which_operation_a_busy_record_waits_for(
    signed_in: Client,
    server: Server,
    make_database: Callable[..., Database],
    make_operation: Callable[..., Operation],
) -> None:
    record = make_database(server, "redis", RecordStatus.INSTALLING)
    operation = make_operation(record, state=OperationState.RUNNING)

    response = signed_in.get(reverse("server-detail", args=[server.name]))

    assert f"installing — operation #{operation.pk} running" in plain_text(
        response.content
    )
    link = reverse("operation-detail", args=[operation.pk])
    assert f'href="{link}">operation #{operation.pk}</a>' in response.content.decode()


def test_it_shows_the_version_and_latest_operation(
    signed_in: Client,
    server: Server,
    make_database: Callable[..., Database],
    make_operation: Callable[..., Operation],
) -> None:
    record = make_database(server, "redis", RecordStatus.ACTIVE, version="7.0.15")
    make_operation(record, action="install", state=OperationState.FAILED)
    latest = make_operation(record, action="install", attempt=2)

    response = signed_in.get(reverse("server-detail", args=[server.name]))

    databases = response.context["families"][0]
    row = databases.kinds[0].rows[0]
    assert (row.kind, row.operation) == ("redis", latest)
    text = page_text(response.content)
    assert "7.0.15" in text
    assert f"#{latest.pk}" in text


FORGED = [
    # (status of the redis record, action, POST data)
    (RecordStatus.ACTIVE, "install", {}),
    (RecordStatus.FAILED, "update", {}),
    (RecordStatus.ACTIVE, "retry", {}),
    (RecordStatus.FAILED, "install", {}),
    (RecordStatus.INSTALLING, "install", {}),
    (RecordStatus.INSTALLING, "update", {}),
    (RecordStatus.INSTALLING, "retry", {}),
    (RecordStatus.INSTALLING, "remove", {"data": "keep", "confirm": "y"}),
    (RecordStatus.PENDING, "remove", {"data": "delete"}),
    (RecordStatus.UPDATING, "update", {}),
    (RecordStatus.UNINSTALLING, "retry", {}),
]


@pytest.mark.parametrize(("status", "action", "data"), FORGED)
def test_it_refuses_a_forged_action_and_changes_nothing(
    signed_in: Client,
    server: Server,
    make_database: Callable[..., Database],
    status: str,
    action: str,
    data: dict[str, str],
) -> None:
    record = make_database(server, "redis", status)
    expected = refusal(record, action)
    assert expected is not None
    before = snapshot()

    response = signed_in.post(action_url(server, "redis", action), data, follow=True)

    assert response.redirect_chain == [
        (reverse("server-detail", args=[server.name]), 302)
    ]
    assert f"Refused: {expected}" in page_text(response.content)
    assert snapshot() == before


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        ({}, "Choose its data."),
        ({"data": ""}, "Choose its data."),
        ({"data": "maybe"}, "&#x27;maybe&#x27; is not one of: keep, delete."),
    ],
)
def test_it_refuses_remove_without_a_data_choice_next_to_the_field(
    signed_in: Client,
    server: Server,
    make_database: Callable[..., Database],
    data: dict[str, str],
    complaint: str,
) -> None:
    make_database(server, "redis", RecordStatus.ACTIVE)
    before = snapshot()

    response = signed_in.post(
        action_url(server, "redis", "remove"), {**data, "confirm": "yes"}
    )

    assert response.status_code == 400
    text = response.content.decode()
    field = text[text.index('id="field-data"') :]
    assert '<ul class="errorlist"' in field.split('name="data"')[0]
    assert complaint in field
    assert snapshot() == before


def test_it_refuses_an_action_on_a_kind_that_is_not_installed(
    signed_in: Client, server: Server
) -> None:
    response = signed_in.post(action_url(server, "redis", "update"), follow=True)

    assert "Refused: Redis is not installed on web-1" in page_text(response.content)
    assert snapshot() == ([], 0, 0, 0)


def test_it_refuses_to_install_next_to_a_conflicting_kind(
    signed_in: Client, server: Server, make_database: Callable[..., Database]
) -> None:
    make_database(server, "mariadb", RecordStatus.ACTIVE)
    before = snapshot()

    response = signed_in.post(action_url(server, "mysql", "install"), follow=True)

    text = page_text(response.content)
    assert "Refused: MySQL cannot be installed next to MariaDB on web-1" in text
    assert snapshot() == before


@pytest.mark.parametrize(
    ("kind", "action"), [("postgres", "install"), ("redis", "purge")]
)
def test_it_404s_an_unknown_kind_or_action(
    signed_in: Client, server: Server, kind: str, action: str
) -> None:
    response = signed_in.post(action_url(server, kind, action))

    assert response.status_code == 404
    assert snapshot() == ([], 0, 0, 0)


def test_it_refuses_an_action_by_get(
    signed_in: Client, server: Server, make_database: Callable[..., Database]
) -> None:
    make_database(server, "redis", RecordStatus.FAILED)
    before = snapshot()

    response = signed_in.get(action_url(server, "redis", "retry"))

    assert response.status_code == 302
    assert snapshot() == before


def test_it_refuses_a_post_without_the_csrf_token(user: User, server: Server) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)

    response = client.post(action_url(server, "redis", "install"))

    assert response.status_code == 403
    assert snapshot() == ([], 0, 0, 0)


def test_it_installs(signed_in: Client, server: Server, user: User) -> None:
    response = signed_in.post(action_url(server, "redis", "install"), follow=True)

    record = Database.objects.get(server=server, kind="redis")
    assert record.status == RecordStatus.PENDING
    operation = Operation.objects.get()
    assert (operation.action, operation.state, operation.attempt) == (
        "install",
        OperationState.QUEUED,
        1,
    )
    assert operation.record_id == record.pk
    assert operation.requested_by == user
    assert DBTaskResult.objects.count() == 1
    text = plain_text(response.content)
    assert (
        f"Install of Redis on web-1 requested (operation #{operation.pk}, attempt 1)."
        in text
    )
    assert f"pending — operation #{operation.pk} queued" in text


@pytest.mark.parametrize(
    ("action", "data", "status"),
    [
        ("update", {}, RecordStatus.UPDATING),
        ("remove", {"data": "keep"}, RecordStatus.UNINSTALLING),
        ("remove", {"data": "delete"}, RecordStatus.UNINSTALLING),
    ],
)
def test_it_updates_and_removes_an_active_record_once_confirmed(
    signed_in: Client,
    server: Server,
    make_database: Callable[..., Database],
    action: str,
    data: dict[str, str],
    status: str,
) -> None:
    record = make_database(server, "redis", RecordStatus.ACTIVE)

    form = {"data": data["data"], "confirm": "yes"} if data else {}
    response = signed_in.post(action_url(server, "redis", action), form)

    assert response.status_code == 302
    record.refresh_from_db()
    assert (record.status, record.last_action) == (status, action)
    operation = Operation.objects.get()
    assert (operation.action, operation.params) == (action, data)


@pytest.mark.parametrize(
    ("last_action", "status"),
    [
        ("install", RecordStatus.PENDING),
        ("update", RecordStatus.UPDATING),
        ("remove", RecordStatus.UNINSTALLING),
    ],
)
def test_it_retries_a_failed_record_by_its_last_action(
    signed_in: Client,
    server: Server,
    make_database: Callable[..., Database],
    make_operation: Callable[..., Operation],
    last_action: str,
    status: str,
) -> None:
    record = make_database(
        server, "redis", RecordStatus.FAILED, last_action=last_action, error_message="x"
    )
    params = {"data": "keep"} if last_action == "remove" else {}
    make_operation(record, state=OperationState.FAILED, params=params)

    response = signed_in.post(action_url(server, "redis", "retry"), follow=True)

    record.refresh_from_db()
    assert (record.status, record.error_message) == (status, "")
    operation = Operation.objects.order_by("-id").first()
    assert operation is not None
    assert (operation.action, operation.attempt, operation.params) == (
        last_action,
        2,
        params,
    )
    assert f"Retry ({last_action}) of Redis on web-1 requested" in page_text(
        response.content
    )
