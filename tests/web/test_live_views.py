"""The pieces the live page fetches: row partials, output tails, cancel, waiting."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from brokeforge.lifecycle.models import Operation, OperationState, RecordStatus
from brokeforge.packages.models import Database, SqlDatabase
from brokeforge.packages.service import request_action
from brokeforge.servers.models import Server
from brokeforge.web.display import slowness, waiting_text
from tests.web.helpers import page_text, plain_text


def test_it_renders_one_row_for_the_live_swap(
    signed_in: Client, server: Server, make_database: Callable[..., Database]
) -> None:
    make_database(server, "redis", RecordStatus.FAILED, error_message="E: no redis")

    response = signed_in.get(reverse("record-row", args=[server.name, "db-redis"]))

    text = response.content.decode().strip()
    assert text.startswith('<tr id="db-redis" class="record record-failed"')
    assert 'hx-trigger="sse:db-redis"' in text
    assert "E: no redis" in text
    assert "<html" not in text


def test_it_polls_a_busy_row_for_its_waiting_reason(
    signed_in: Client, server: Server
) -> None:
    request_action(server, "redis", "install")

    response = signed_in.get(reverse("record-row", args=[server.name, "db-redis"]))

    text = page_text(response.content)
    assert 'hx-trigger="sse:db-redis, every 5s"' in text
    assert "waiting for a worker — none is running" in text
    assert "Cancel install" in text


@pytest.mark.parametrize(
    "key", ["db-postgres", "firewall-redis", "db-", "rec-redis-1", "rec-x-y"]
)
def test_it_404s_an_unknown_row(signed_in: Client, server: Server, key: str) -> None:
    response = signed_in.get(reverse("record-row", args=[server.name, key]))

    assert response.status_code == 404


def test_it_cancels_a_queued_operation_from_the_page(
    signed_in: Client, server: Server
) -> None:
    operation = request_action(server, "redis", "install")

    response = signed_in.post(
        reverse("operation-cancel", args=[operation.pk]), follow=True
    )

    operation.refresh_from_db()
    assert operation.state == OperationState.CANCELLED
    record = Database.objects.get()
    assert record.status == RecordStatus.FAILED
    assert record.error_message.startswith("cancelled by alice before it started")
    assert f"Cancelled install of Redis on web-1 (#{operation.pk})." in plain_text(
        response.content
    )


def test_it_refuses_to_cancel_a_finished_operation(
    signed_in: Client,
    server: Server,
    make_database: Callable[..., Database],
    make_operation: Callable[..., Operation],
) -> None:
    operation = make_operation(make_database(server, "redis"))

    response = signed_in.post(
        reverse("operation-cancel", args=[operation.pk]), follow=True
    )

    assert "there is nothing to cancel" in page_text(response.content)
    operation.refresh_from_db()
    assert operation.state == OperationState.SUCCEEDED


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (0, "[… 100 characters of output were not kept …]\nabcdef"),
        (100, "abcdef"),
        (103, "def"),
        (106, ""),
        (500, ""),
    ],
)
def test_it_tails_the_output_from_a_position_in_the_whole_stream(
    signed_in: Client,
    server: Server,
    make_database: Callable[..., Database],
    make_operation: Callable[..., Operation],
    offset: int,
    expected: str,
) -> None:
    record = make_database(server, "redis", RecordStatus.INSTALLING)
    operation = make_operation(
        record, state=OperationState.RUNNING, output="abcdef", output_dropped=100
    )
    url = reverse("operation-output", args=[operation.pk])

    response = signed_in.get(url, {"offset": offset})

    text = page_text(response.content)
    assert text.split("<span id=")[0] == expected
    assert f'hx-get="{url}?offset=106"' in text


def test_it_ends_the_tail_with_the_final_summary(
    signed_in: Client,
    server: Server,
    make_database: Callable[..., Database],
    make_operation: Callable[..., Operation],
) -> None:
    record = make_database(server, "redis", RecordStatus.FAILED)
    operation = make_operation(
        record, state=OperationState.FAILED, output="x", error_message="E: broke"
    )

    response = signed_in.get(
        reverse("operation-output", args=[operation.pk]), {"offset": 1}
    )

    text = response.content.decode()
    assert 'id="tail"' not in text
    assert '<div id="op-summary" hx-swap-oob="true">' in text
    assert "E: broke" in text


def test_it_refuses_a_bad_offset(
    signed_in: Client,
    server: Server,
    make_database: Callable[..., Database],
    make_operation: Callable[..., Operation],
) -> None:
    operation = make_operation(make_database(server, "redis"))

    response = signed_in.get(
        reverse("operation-output", args=[operation.pk]), {"offset": "1;2"}
    )

    assert response.status_code == 400


def test_it_lists_a_records_operations_apart_from_the_servers(
    signed_in: Client,
    server: Server,
    user: User,
    make_database: Callable[..., Database],
    make_operation: Callable[..., Operation],
) -> None:
    now = timezone.now()
    redis = make_operation(
        make_database(server, "redis"),
        requested_by=user,
        started_at=now - timedelta(seconds=75),
        finished_at=now,
    )
    mariadb = make_operation(make_database(server, "mariadb"))
    url = reverse("server-operations", args=[server.name])

    everything = plain_text(signed_in.get(url).content)
    only_redis = plain_text(signed_in.get(url, {"row": "db-redis"}).content)

    assert f"#{mariadb.pk}" in everything and f"#{redis.pk}" in everything
    assert f"#{mariadb.pk}" not in only_redis
    assert f"#{redis.pk} install Redis on web-1 1 ✓ succeeded alice" in only_redis
    assert "75 s" in only_redis


def test_it_serves_htmx_and_its_sse_extension(client: Client, user: User) -> None:
    for name, marker in [("htmx.js", b"htmx"), ("htmx-sse.js", b"sse-connect")]:
        response = client.get(reverse("asset", args=[name]))
        assert response.status_code == 200
        assert response["Content-Type"] == "text/javascript"
        assert marker in response.content
    assert client.get("/assets/..%2Fsettings.py").status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "/servers/web-1/rows/db-redis/",
        "/servers/web-1/operations/",
        "/servers/web-1/operations/recent/",
        "/servers/web-1/redis/remove/",
        "/operations/1/output/?offset=0",
    ],
)
def test_it_sends_a_visitor_who_is_not_signed_in_to_sign_in(
    client: Client, user: User, server: Server, url: str
) -> None:
    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_it_says_when_an_operation_takes_longer_than_usual(
    server: Server,
    make_database: Callable[..., Database],
    make_operation: Callable[..., Operation],
) -> None:
    record = make_database(server, "redis", RecordStatus.INSTALLING)
    start = timezone.now() - timedelta(hours=1)
    for seconds in (20, 30, 400):  # median 30 s
        make_operation(
            record,
            started_at=start,
            finished_at=start + timedelta(seconds=seconds),
        )
    make_operation(record, state=OperationState.FAILED, started_at=start)
    running = make_operation(
        record, state=OperationState.RUNNING, started_at=start, heartbeat_at=start
    )

    assert slowness(running, now=start + timedelta(seconds=59)) == ""
    assert slowness(running, now=start + timedelta(seconds=60)) == (
        "taking longer than usual: running for 60 s, usually done in 30 s"
    )
    assert "taking longer than usual" in waiting_text(running)


def test_it_does_not_guess_without_earlier_successes(
    server: Server,
    make_database: Callable[..., Database],
    make_operation: Callable[..., Operation],
) -> None:
    record = make_database(server, "redis", RecordStatus.INSTALLING)
    start = timezone.now() - timedelta(hours=5)
    running = make_operation(record, state=OperationState.RUNNING, started_at=start)

    assert slowness(running) == ""


def test_it_renders_the_row_and_table_of_a_kind_with_many_records(
    signed_in: Client, server: Server, make_database: Callable[..., Database]
) -> None:
    make_database(server, "mariadb", RecordStatus.ACTIVE)
    request_action(
        server, "database", "install", params={"engine": "mariadb", "name": "shop"}
    )
    shop = SqlDatabase.objects.get()
    key = f"rec-database-{shop.pk}"

    row = signed_in.get(reverse("record-row", args=[server.name, key]))
    table = signed_in.get(reverse("kind-table", args=[server.name, "database"]))

    assert row.content.decode().strip().startswith(f'<tr id="{key}"')
    assert "database shop in MariaDB" in plain_text(row.content)
    assert f'<tr id="{key}"' in table.content.decode()
    assert 'hx-trigger="sse:kind-database"' in table.content.decode()
    other = signed_in.get(reverse("record-row", args=[server.name, key + "0"]))
    assert other.status_code == 404
    assert (
        signed_in.get(reverse("kind-table", args=[server.name, "redis"])).status_code
        == 404
    )
