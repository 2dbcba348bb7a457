"""The live stream of a server's changes, as server-sent events.

The stream reads `lifecycle.models.Event`, the log written in the same
transaction as every status change, so it shows exactly what was committed.
Each event goes out named by the key of the row it changes (the row reloads
itself, see `templates/web/_record_row.html`), as `kind-KIND` when a record
of a kind with many records appeared or went (its table reloads), and as
`server` (the operations table reloads). All carry the event id, so a
reconnecting browser sends the last one back as `Last-Event-ID` and the
stream resumes right after it.

A stream first replays the log from its resume point, then takes new events
from the process's shared watcher (`web/feed.py`), which reads the log once
for every open stream. Every `ACCESS_INTERVAL` seconds it asks again whether
its account (still signed in) may see the server, and ends if not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import import_module

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import DatabaseError, connection
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    StreamingHttpResponse,
)
from django.views.decorators.http import require_GET

from brokeforge.servers.models import Server
from brokeforge.web.access import visible_server, visible_servers
from brokeforge.web.feed import (
    BATCH,
    END,
    FEED,
    Item,
    Subscription,
    read_items,
)

# `latest_event_id` is also the pages' (web/views.py) to render `?after=`.
from brokeforge.web.feed import latest_event_id as latest_event_id

logger = logging.getLogger(__name__)

#: Seconds of silence after which a comment line keeps proxies from closing.
KEEPALIVE_INTERVAL = 15.0
#: Milliseconds a browser waits before reconnecting (sent as `retry:`).
RECONNECT_MS = 1000
#: Seconds between two checks that the viewer may still see the server.
ACCESS_INTERVAL = 10.0

# Shortcoming: a withdrawn right (sign-out, a server given to another account)
# ends an open stream within ACCESS_INTERVAL, not at once, until
# `servers.access` announces withdrawals the streams can listen for.


@require_GET
async def server_events(request: HttpRequest, name: str) -> HttpResponseBase:
    user = await request.auser()
    if not user.is_authenticated:
        return HttpResponse("sign in first\n", status=403, content_type="text/plain")
    server, after = await sync_to_async(_open, thread_sensitive=False)(
        user, name, request
    )
    viewer = Viewer(user.pk, request.session.session_key, server.pk, server.name)
    response = StreamingHttpResponse(
        _stream(viewer, after), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def resume_point(request: HttpRequest) -> int:
    """The last event id the browser has seen: its header, else `?after=`.

    The page renders `?after=` with the newest event id it was built from;
    the browser's own `Last-Event-ID` (sent on reconnect) wins when present.
    """
    for raw in (request.headers.get("Last-Event-ID"), request.GET.get("after")):
        if raw and raw.strip().isdigit():
            return int(raw.strip())
    return latest_event_id()


def _open(
    user: AbstractBaseUser | AnonymousUser, name: str, request: HttpRequest
) -> tuple[Server, int]:
    """The server to stream (404 if the user may not see it) and where to start."""
    try:
        return visible_server(user, name), resume_point(request)
    finally:
        connection.close()


@dataclass(frozen=True)
class Viewer:
    """Who holds a stream open, so the stream can ask again if they still may."""

    user_id: object
    session_key: str | None
    server_id: int
    server_name: str

    def still_allowed(self) -> bool:
        """Still signed in as the same account, which still sees the server
        under the same name (a renamed server's page is gone too)."""
        try:
            request = HttpRequest()
            engine = import_module(settings.SESSION_ENGINE)
            request.session = engine.SessionStore(self.session_key)
            user = get_user(request)
            return (
                user.is_authenticated
                and user.pk == self.user_id
                and visible_servers(user)
                .filter(pk=self.server_id, name=self.server_name)
                .exists()
            )
        finally:
            connection.close()


async def _stream(viewer: Viewer, after: int) -> AsyncIterator[str]:
    subscription = Subscription(viewer.server_id)
    try:
        # Subscribe first, then replay: an event committed in between comes
        # both ways, and the copy from the feed is skipped.
        await sync_to_async(_subscribe, thread_sensitive=False)(subscription)
        replay = sync_to_async(_replay, thread_sensitive=False)
        items = await replay(viewer.server_id, after)
        yield f"retry: {RECONNECT_MS}\n\n"
        replayed: set[int] = set()
        while True:
            if items:
                yield "".join(item.text for item in items)
                replayed.update(item.event_id for item in items)
                after = items[-1].event_id
            if len(items) < BATCH:
                break
            items = await replay(viewer.server_id, after)
        async for text in _follow(viewer, subscription, replayed):
            yield text
    finally:
        FEED.unsubscribe(subscription)


async def _follow(
    viewer: Viewer, subscription: Subscription, replayed: set[int]
) -> AsyncIterator[str]:
    """New events from the feed, keepalives in silence, until access ends."""
    last_sent = checked = time.monotonic()
    while True:
        now = time.monotonic()
        wait = min(last_sent + KEEPALIVE_INTERVAL, checked + ACCESS_INTERVAL) - now
        try:
            item: Item | None = await subscription.next(wait)
        except TimeoutError:
            pass
        else:
            if item is END:
                return  # the browser reconnects and resumes from the log
            assert item is not None
            if item.event_id not in replayed:
                yield item.text
                last_sent = time.monotonic()
            continue
        if time.monotonic() - checked >= ACCESS_INTERVAL:
            try:
                allowed = await sync_to_async(
                    viewer.still_allowed, thread_sensitive=False
                )()
            except DatabaseError as exc:
                # Unknown is not allowed: the browser reconnects and asks
                # again (the page cannot change meanwhile anyway).
                logger.warning(
                    "event stream of %s ended: could not check access: %s",
                    viewer.server_name,
                    exc,
                    extra={"action": "stream_access_unknown"},
                )
                return
            if not allowed:
                logger.info(
                    "event stream of %s ended: its viewer may no longer see it",
                    viewer.server_name,
                    extra={"action": "stream_access_ended"},
                )
                return
            checked = time.monotonic()
        if time.monotonic() - last_sent >= KEEPALIVE_INTERVAL:
            yield ": keepalive\n\n"
            last_sent = time.monotonic()


def _subscribe(subscription: Subscription) -> None:
    try:
        FEED.subscribe(subscription)
    finally:
        connection.close()


def _replay(server_id: int, after: int) -> list[Item]:
    """The server's events after `after` from the log, holding no connection."""
    try:
        return read_items(server_id, after)
    finally:
        connection.close()


def read_messages(server_id: int, after: int) -> tuple[list[str], int]:
    """The SSE messages for this server's events after `after`, and the new mark.

    Opens and closes its own database connection.
    """
    items = _replay(server_id, after)
    messages = [message for item in items for message in item.messages]
    return messages, items[-1].event_id if items else after
