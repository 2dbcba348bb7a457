"""On PostgreSQL a status change NOTIFYs at commit, and open streams wake on it.

These run in the PostgreSQL pass of scripts/test (SQLite has no
notifications: there the watcher polls, see tests/web/test_events.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.db import connection, connections, transaction
from django.test import AsyncClient
from django.urls import reverse

from brokeforge.lifecycle.events import EVENTS_CHANNEL
from brokeforge.packages.service import request_action
from brokeforge.servers.models import Server
from brokeforge.web import feed
from brokeforge.web.feed import FEED
from tests.web.streams import close_connection, in_thread

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="NOTIFY is PostgreSQL's"
    ),
]


@pytest.fixture
def listener() -> Iterator[object]:
    """A connection of its own that LISTENs on the events channel."""
    wrapper = connections.create_connection("default")
    wrapper.connect()
    raw = wrapper.connection
    raw.execute(f"LISTEN {EVENTS_CHANNEL}")
    try:
        yield raw
    finally:
        wrapper.close()


def test_it_announces_a_committed_change_and_not_a_rolled_back_one(
    make_server: Callable[..., Server], listener: object
) -> None:
    server = make_server("web-1")
    notifies = listener.notifies  # type: ignore[attr-defined]

    with pytest.raises(RuntimeError), transaction.atomic():
        request_action(server, "redis", "install")
        raise RuntimeError("the request is rolled back")
    assert list(notifies(timeout=0.5)) == []

    request_action(server, "redis", "install")

    received = list(notifies(timeout=10, stop_after=1))
    assert [(n.channel, n.payload) for n in received] == [
        (EVENTS_CHANNEL, str(server.pk))
    ]


def test_it_wakes_an_open_stream_on_notify_without_polling(
    make_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The watcher would read by itself only after a minute: the event can
    # only arrive in time through the NOTIFY.
    monkeypatch.setattr(feed, "NOTIFY_FALLBACK", 60.0)
    server = make_server("web-1")
    user = User.objects.get(username="alice")

    async def read() -> str:
        client = AsyncClient()
        await client.aforce_login(user)
        response = await client.get(reverse("server-events", args=[server.name]))
        stream = aiter(response.streaming_content)
        await asyncio.wait_for(anext(stream), timeout=10)  # retry:
        # Let the watcher reach its wait for a notification.
        await asyncio.sleep(0.5)
        await in_thread(request_action, server, "redis", "install")
        chunk = await asyncio.wait_for(anext(stream), timeout=10)
        await stream.aclose()  # type: ignore[attr-defined]
        # The test client keeps the connection its thread used for the
        # session (it does not close connections at the request's end).
        await sync_to_async(close_connection)()
        return bytes(chunk).decode()

    try:
        chunk = asyncio.run(read())
    finally:
        FEED.stop()

    assert "event: db-redis" in chunk
