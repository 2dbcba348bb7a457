"""Waking whoever follows the event log when a change commits.

The state machine appends an `Event` in the transaction of every status
change and calls `announce` with it. On PostgreSQL that queues a NOTIFY on
`EVENTS_CHANNEL`; PostgreSQL delivers it only when, and if, the transaction
commits, so a listener wakes exactly for committed changes and never for a
rolled-back one. SQLite has no notifications: its readers poll (see
`web/feed.py`).
"""

from __future__ import annotations

from django.db import connection

from brokeforge.lifecycle.models import Event

#: The PostgreSQL channel every new event is announced on; the payload is the
#: event's server id (listeners read the log itself, not the payload).
EVENTS_CHANNEL = "brokeforge_events"


def announce(event: Event) -> None:
    """NOTIFY listeners of `event` at commit (PostgreSQL; nothing elsewhere)."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_notify(%s, %s)", [EVENTS_CHANNEL, str(event.server_id)]
        )
