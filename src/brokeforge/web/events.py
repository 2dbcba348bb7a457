"""The live stream of a server's changes, as server-sent events.

The stream reads `lifecycle.models.Event`, the log written in the same
transaction as every status change, so it shows exactly what was committed.
Each event goes out named by the key of the row it changes (the row reloads
itself, see `templates/web/_record_row.html`), as `kind-KIND` when a record
of a kind with many records appeared or went (its table reloads), and as
`server` (the operations table reloads). All carry the event
id, so a reconnecting browser sends the last one back as `Last-Event-ID`
and the stream resumes right after it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import close_old_connections, connection
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    StreamingHttpResponse,
)
from django.views.decorators.http import require_GET

from brokeforge.lifecycle.models import Event
from brokeforge.servers.models import Server
from brokeforge.web.access import visible_server
from brokeforge.web.display import kind_of, row_key_of

logger = logging.getLogger(__name__)

#: Seconds between two reads of the event log (SQLite has no notifications).
POLL_INTERVAL = 0.5
#: Seconds of silence after which a comment line keeps proxies from closing.
KEEPALIVE_INTERVAL = 15.0
#: Milliseconds a browser waits before reconnecting (sent as `retry:`).
RECONNECT_MS = 1000
#: At most this many events are read per poll; the rest come next poll.
BATCH = 200

# Shortcoming: the stream polls the log every POLL_INTERVAL on PostgreSQL too
# until it listens for NOTIFY there (a later issue: PostgreSQL scale-out).
# Shortcoming: access is checked when a stream opens, not while it stays open
# (a sign-out elsewhere ends it only at the next reconnect) until server
# owners land (issue 6) and `web.access` can say when a right was withdrawn.


@require_GET
async def server_events(request: HttpRequest, name: str) -> HttpResponseBase:
    user = await request.auser()
    if not user.is_authenticated:
        return HttpResponse("sign in first\n", status=403, content_type="text/plain")
    server, after = await sync_to_async(_open, thread_sensitive=False)(
        user, name, request
    )
    response = StreamingHttpResponse(
        _stream(server.pk, after), content_type="text/event-stream"
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


def latest_event_id() -> int:
    newest = Event.objects.order_by("-id").values_list("id", flat=True).first()
    return newest or 0


def _open(
    user: AbstractBaseUser | AnonymousUser, name: str, request: HttpRequest
) -> tuple[Server, int]:
    """The server to stream (404 if the user may not see it) and where to start."""
    try:
        return visible_server(user, name), resume_point(request)
    finally:
        connection.close()


async def _stream(server_id: int, after: int) -> AsyncIterator[str]:
    yield f"retry: {RECONNECT_MS}\n\n"
    last_sent = time.monotonic()
    while True:
        messages, after = await sync_to_async(read_messages, thread_sensitive=False)(
            server_id, after
        )
        if messages:
            yield "".join(messages)
            last_sent = time.monotonic()
        elif time.monotonic() - last_sent >= KEEPALIVE_INTERVAL:
            yield ": keepalive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(POLL_INTERVAL)


def read_messages(server_id: int, after: int) -> tuple[list[str], int]:
    """The SSE messages for this server's events after `after`, and the new mark.

    Opens and closes its own database connection, so no connection is held
    while the stream sleeps.
    """
    close_old_connections()
    try:
        events = list(
            Event.objects.filter(server_id=server_id, pk__gt=after)
            .select_related("operation", "record_type")
            .order_by("id")[:BATCH]
        )
        messages = [text for event in events for text in _messages(event)]
        return messages, events[-1].pk if events else after
    finally:
        connection.close()


def _messages(event: Event) -> list[str]:
    data = json.dumps(
        {
            "status": event.status,
            "record": event.record_label,
            "operation": event.operation_id,
        }
    )
    names = [row_key_of(event), _kind_event(event), "server"]
    return [
        f"id: {event.pk}\nevent: {name}\ndata: {data}\n\n" for name in names if name
    ]


def _kind_event(event: Event) -> str | None:
    kind = kind_of(event)
    return f"kind-{kind}" if kind else None
