"""The event stream: what it sends, to whom, and where it resumes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import AsyncClient, Client, RequestFactory
from django.urls import reverse

from brokeforge.lifecycle import machine
from brokeforge.lifecycle.models import Action, Event, Operation, OperationState
from brokeforge.packages.models import Database, SqlDatabase
from brokeforge.packages.service import request_action
from brokeforge.servers.models import Server
from brokeforge.web.events import read_messages, resume_point
from tests.conftest import TEST_WORKER
from tests.web.helpers import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)


def events_url(server: Server) -> str:
    return reverse("server-events", args=[server.name])


def test_it_names_each_event_by_its_row_and_carries_its_id(server: Server) -> None:
    operation = request_action(server, "redis", "install")
    event = Event.objects.get()

    messages, mark = read_messages(server.pk, 0)

    data = json.dumps(
        {"status": "pending", "record": "Redis on web-1", "operation": operation.pk}
    )
    assert messages == [
        f"id: {event.pk}\nevent: db-redis\ndata: {data}\n\n",
        f"id: {event.pk}\nevent: server\ndata: {data}\n\n",
    ]
    assert mark == event.pk
    assert read_messages(server.pk, mark) == ([], mark)


def test_it_sends_a_removal_to_the_row_of_the_removed_kind(server: Server) -> None:
    record = Database.objects.create(
        server=server, kind="mariadb", status="active", last_action="install"
    )
    operation = machine.request(record, Action.REMOVE, params={"data": "keep"})
    claimed = machine.claim(operation.pk, TEST_WORKER)
    assert claimed is not None
    machine.succeed(claimed, TEST_WORKER)
    assert not Database.objects.exists()
    removed = Event.objects.get(status="removed")

    messages, _ = read_messages(server.pk, removed.pk - 1)

    assert messages[0].startswith(f"id: {removed.pk}\nevent: db-mariadb\n")


def test_it_sends_only_the_servers_own_events(
    server: Server, make_server: Callable[..., Server]
) -> None:
    other = make_server("db-2")
    request_action(other, "redis", "install")
    request_action(server, "mysql", "install")

    messages, _ = read_messages(server.pk, 0)

    names = [m.split("\n")[1] for m in messages]
    assert names == ["event: db-mysql", "event: server"]
    assert "db-2" not in "".join(messages)


def test_it_holds_no_database_connection_between_reads(server: Server) -> None:
    request_action(server, "redis", "install")

    read_messages(server.pk, 0)

    assert connection.connection is None


@pytest.mark.parametrize(
    ("header", "query", "expected"),
    [
        # Values are relative to the newest event id.
        (-1, -3, -1),  # the browser's own Last-Event-ID wins
        (None, -3, -3),  # a fresh EventSource: the mark the page was built at
        ("junk", -3, -3),
        (None, None, 0),  # neither: from now on
        (None, "-1", 0),
    ],
)
def test_it_resumes_after_the_last_event_id(
    server: Server,
    header: int | str | None,
    query: int | str | None,
    expected: int,
) -> None:
    request_action(server, "redis", "install")
    request_action(server, "mysql", "install")
    newest = Event.objects.order_by("-id").values_list("id", flat=True)[0]

    def absolute(value: int | str) -> str:
        return str(newest + value) if isinstance(value, int) else value

    headers = {"Last-Event-ID": absolute(header)} if header is not None else {}
    params = {"after": absolute(query)} if query is not None else {}
    request = RequestFactory().get("/", params, headers=headers)

    assert resume_point(request) == newest + expected


def test_it_refuses_the_stream_to_a_visitor_who_is_not_signed_in(
    server: Server,
) -> None:
    User.objects.create_user("alice", password=PASSWORD)

    response = Client().get(events_url(server))

    assert response.status_code == 403


def test_it_404s_the_stream_of_an_unknown_server(db: None) -> None:
    user = User.objects.create_user("alice", password=PASSWORD)
    client = Client()
    client.force_login(user)

    response = client.get("/servers/nope/events/")

    assert response.status_code == 404


def test_it_streams_from_the_last_event_id_over_asgi(server: Server) -> None:
    user = User.objects.create_user("alice", password=PASSWORD)
    first = request_action(server, "redis", "install")
    second = request_action(server, "mysql", "install")
    seen = Event.objects.get(operation=first).pk

    async def read() -> list[str]:
        client = AsyncClient()
        await client.aforce_login(user)
        response = await client.get(
            events_url(server), headers={"Last-Event-ID": str(seen)}
        )
        assert response["Content-Type"] == "text/event-stream"
        chunks = []
        stream = aiter(response.streaming_content)
        for _ in range(2):
            chunk = await asyncio.wait_for(anext(stream), timeout=10)
            chunks.append(bytes(chunk).decode())
        await stream.aclose()  # type: ignore[attr-defined]
        return chunks

    chunks = asyncio.run(read())

    assert chunks[0] == "retry: 1000\n\n"
    assert chunks[1].startswith(f"id: {seen + 1}\nevent: db-mysql\n")
    assert f'"operation": {second.pk}' in chunks[1]
    assert "db-redis" not in chunks[1]


def test_it_starts_from_now_without_a_mark(server: Server) -> None:
    user = User.objects.create_user("alice", password=PASSWORD)
    request_action(server, "redis", "install")

    async def read() -> str:
        client = AsyncClient()
        await client.aforce_login(user)
        response = await client.get(events_url(server))
        stream = aiter(response.streaming_content)
        await asyncio.wait_for(anext(stream), timeout=10)  # retry:
        await asyncio.to_thread(request_action, server, "mysql", "install")
        chunk = await asyncio.wait_for(anext(stream), timeout=10)
        await stream.aclose()  # type: ignore[attr-defined]
        return bytes(chunk).decode()

    chunk = asyncio.run(read())

    assert "event: db-mysql" in chunk
    assert "db-redis" not in chunk


def test_it_gives_the_cancel_of_a_queued_operation_its_own_event(
    server: Server,
) -> None:
    operation = request_action(server, "redis", "install")

    machine.cancel(operation)

    messages, _ = read_messages(server.pk, Event.objects.first().pk)  # type: ignore[union-attr]
    assert '"status": "failed"' in messages[0]
    assert Operation.objects.get().state == OperationState.CANCELLED


def test_it_reloads_the_table_of_a_kind_with_many_records_on_a_new_one(
    server: Server,
) -> None:
    Database.objects.create(
        server=server, kind="mariadb", status="active", last_action="install"
    )
    request_action(
        server, "database", "install", params={"engine": "mariadb", "name": "shop"}
    )
    shop = SqlDatabase.objects.get()

    messages, _ = read_messages(server.pk, 0)

    names = [m.split("\n")[1] for m in messages]
    assert names == [
        f"event: rec-database-{shop.pk}",
        "event: kind-database",
        "event: server",
    ]
