"""One watcher per web process: it reads new events once and hands each to
every open stream of its server.

Each open server page holds an event stream (`web/events.py`). Instead of
every stream reading the log on its own, one thread per process — the
watcher — reads what is new and gives each event, already turned into its
SSE messages, to the streams subscribed to that event's server. The cost of
following the log does not grow with the number of open pages.

- On PostgreSQL the watcher LISTENs on `lifecycle.events.EVENTS_CHANNEL`,
  which the state machine NOTIFYs in the transaction that writes the event:
  it reads as soon as a change commits, and at least every
  `NOTIFY_FALLBACK` seconds in case a notification was missed.
- On SQLite, which has no notifications, it reads every `POLL_INTERVAL`:
  one query on the primary key (`id > mark`) per process.

The watcher runs while a stream is subscribed and ends `IDLE_STOP` seconds
after the last one left, closing its database connection.

Ids and commit order: on SQLite writers take turns, so event ids are
committed in order. On PostgreSQL a transaction may commit an event whose id
is lower than one already read (ids are handed out before commit). The
watcher remembers such holes below its mark for `GAP_WAIT` seconds and reads
them again, so a late commit still reaches the page.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, connection
from django.db.models import Q

from brokeforge.lifecycle.events import EVENTS_CHANNEL
from brokeforge.lifecycle.models import Event
from brokeforge.web.display import kind_of, row_key_of

logger = logging.getLogger(__name__)

#: Seconds between two reads of the log on SQLite (no notifications there).
POLL_INTERVAL = 0.05
#: On PostgreSQL, seconds after which the log is read even without a NOTIFY.
NOTIFY_FALLBACK = 2.0
#: On PostgreSQL, the longest wait for a NOTIFY between two looks at whether
#: the watcher was stopped.
STOP_SLICE = 0.5
#: Seconds the watcher stays up with no stream open, then stops.
IDLE_STOP = 2.0
#: Seconds to wait after a failed read (the database is away) before the next.
RETRY_DELAY = 1.0
#: At most this many events are read at once; the rest come with the next read.
BATCH = 200
#: Seconds a hole in the ids below the mark is read again (see the docstring).
GAP_WAIT = 30.0
#: At most this many holes are remembered (a rollback of many inserts, or a
#: sequence jump after a crash, makes large holes that never fill).
MAX_GAPS = 200
#: Events a stream may have waiting before it is ended (a browser that stopped
#: reading); the browser reconnects and resumes from the log.
QUEUE_LIMIT = 1000


@dataclass(frozen=True)
class Item:
    """One event as the streams send it."""

    event_id: int
    server_id: int
    #: Its SSE messages, one per name (row key, kind table, `server`).
    messages: tuple[str, ...]

    @property
    def text(self) -> str:
        return "".join(self.messages)


def item_of(event: Event) -> Item:
    data = json.dumps(
        {
            "status": event.status,
            "record": event.record_label,
            "operation": event.operation_id,
        }
    )
    kind = kind_of(event)
    names = [row_key_of(event), f"kind-{kind}" if kind else None, "server"]
    messages = tuple(
        f"id: {event.pk}\nevent: {name}\ndata: {data}\n\n" for name in names if name
    )
    return Item(event.pk, event.server_id, messages)


def read_items(
    server_id: int | None, after: int, gaps: Collection[int] = ()
) -> list[Item]:
    """Events after id `after` (and those with an id in `gaps`), oldest
    first, at most BATCH; of one server, or of all with `server_id` None."""
    wanted = Q(pk__gt=after) | Q(pk__in=gaps) if gaps else Q(pk__gt=after)
    events = Event.objects.filter(wanted)
    if server_id is not None:
        events = events.filter(server_id=server_id)
    events = events.select_related("operation", "record_type").order_by("id")
    return [item_of(event) for event in events[:BATCH]]


def latest_event_id() -> int:
    newest = Event.objects.order_by("-id").values_list("id", flat=True).first()
    return newest or 0


#: Put in a stream's queue to end it (the watcher failed, or the stream fell
#: too far behind); the browser reconnects and resumes from the log.
END = None


class Subscription:
    """One open stream's place in the feed: its server and its queue.

    Made in the stream's event loop; the watcher thread hands it items
    through that loop.
    """

    def __init__(self, server_id: int) -> None:
        self.server_id = server_id
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Item | None] = asyncio.Queue()
        self._ended = False

    def deliver(self, item: Item | None) -> bool:
        """From the watcher: queue `item` (or END). False if the stream's
        loop is gone, so the subscription can be dropped."""
        try:
            self._loop.call_soon_threadsafe(self._put, item)
        except RuntimeError:  # the loop was closed
            return False
        return True

    def _put(self, item: Item | None) -> None:
        if self._ended:
            return
        if item is END or self._queue.qsize() >= QUEUE_LIMIT:
            self._ended = True
            item = END
        self._queue.put_nowait(item)

    async def next(self, timeout: float) -> Item | None:
        """The next item, END, or TimeoutError after `timeout` seconds."""
        return await asyncio.wait_for(self._queue.get(), timeout=max(timeout, 0))


class Feed:
    """The streams of one process and the watcher that feeds them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscriptions: set[Subscription] = set()
        self._watcher: Watcher | None = None

    def subscribe(self, subscription: Subscription) -> None:
        """Start delivering new events of the subscription's server to it.

        Call from a thread that may use the database: starting the watcher
        reads the log's newest id. Events committed before the call are the
        stream's to read from the log itself (a replay is harmless).
        """
        with self._lock:
            if self._watcher is None:
                self._watcher = Watcher(self, latest_event_id())
                self._watcher.thread.start()
                logger.debug("event feed started", extra={"action": "feed_started"})
            self._subscriptions.add(subscription)

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscriptions.discard(subscription)

    @property
    def subscriptions(self) -> int:
        with self._lock:
            return len(self._subscriptions)

    def stop(self, timeout: float = 10.0) -> None:
        """End the watcher now (tests; it also stops by itself when idle)."""
        with self._lock:
            watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stopping.set()
            watcher.thread.join(timeout)

    def subscribed(self, server_id: int) -> list[Subscription]:
        with self._lock:
            return [s for s in self._subscriptions if s.server_id == server_id]

    def keeps(self, watcher: Watcher, idle_since: float | None) -> bool:
        """Whether `watcher` should go on; it retires when no stream was
        subscribed for IDLE_STOP seconds (or it was stopped)."""
        with self._lock:
            if self._watcher is not watcher:
                return False
            if self._subscriptions or idle_since is None:
                return True
            if time.monotonic() - idle_since < IDLE_STOP:
                return True
            self._watcher = None
            return False

    def idle(self) -> bool:
        with self._lock:
            return not self._subscriptions

    def end_all(self, watcher: Watcher) -> None:
        """The watcher failed: end every stream (browsers reconnect, and the
        first one starts a new watcher)."""
        with self._lock:
            if self._watcher is watcher:
                self._watcher = None
            subscriptions, self._subscriptions = self._subscriptions, set()
        for subscription in subscriptions:
            subscription.deliver(END)


class Watcher:
    """The thread that reads the log for a `Feed`, from `mark` on."""

    def __init__(self, feed: Feed, mark: int) -> None:
        self.feed = feed
        self.mark = mark
        #: Ids below the mark not seen yet, and when they were first missed.
        self.gaps: dict[int, float] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(
            target=self.run, name="brokeforge-event-feed", daemon=True
        )
        #: id() of the connection the LISTEN was sent on, None before.
        self._listening_on: int | None = None

    def run(self) -> None:
        try:
            idle_since: float | None = None
            while not self.stopping.is_set():
                if not self.feed.idle():
                    idle_since = None
                elif idle_since is None:
                    idle_since = time.monotonic()
                if not self.feed.keeps(self, idle_since):
                    return
                self.step()
        except Exception:
            logger.exception(
                "event feed failed; open streams end and reconnect",
                extra={"action": "feed_failed"},
            )
            self.feed.end_all(self)
        finally:
            with contextlib.suppress(DatabaseError):
                connection.close()

    def step(self) -> None:
        """Wait for news (a NOTIFY, or the poll interval), then read it."""
        try:
            with connection.wrap_database_errors:
                self._wait()
            self.read_and_deliver()
        except DatabaseError as exc:
            logger.warning(
                "event feed could not read the log: %s; trying again in %s s",
                exc,
                RETRY_DELAY,
                extra={"action": "feed_read_failed"},
            )
            self._listening_on = None
            with contextlib.suppress(DatabaseError):
                connection.close()
            self.stopping.wait(RETRY_DELAY)

    def _wait(self) -> None:
        if connection.vendor != "postgresql":
            self.stopping.wait(POLL_INTERVAL)
            return
        connection.ensure_connection()
        raw: Any = connection.connection
        if self._listening_on != id(raw):
            raw.execute(f"LISTEN {EVENTS_CHANNEL}")
            self._listening_on = id(raw)
            return  # read at once: events may have come before the LISTEN
        # In short slices, so that `stopping` is heard within one.
        deadline = time.monotonic() + NOTIFY_FALLBACK
        while not self.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            for _ in raw.notifies(timeout=min(remaining, STOP_SLICE), stop_after=1):
                return

    def read_and_deliver(self) -> None:
        items = read_items(None, self.mark, list(self.gaps))
        self._note_gaps(items)
        for item in items:
            for subscription in self.feed.subscribed(item.server_id):
                if not subscription.deliver(item):
                    self.feed.unsubscribe(subscription)

    def _note_gaps(self, items: list[Item]) -> None:
        """Move the mark past `items`; remember the ids they skipped."""
        now = time.monotonic()
        read = {item.event_id for item in items}
        for event_id in read:
            self.gaps.pop(event_id, None)
        newest = max(read, default=self.mark)
        for missing in range(max(self.mark + 1, newest - MAX_GAPS), newest):
            if missing not in read:
                self.gaps[missing] = now
        self.mark = max(self.mark, newest)
        for event_id, since in list(self.gaps.items()):
            if now - since >= GAP_WAIT:
                del self.gaps[event_id]
        while len(self.gaps) > MAX_GAPS:
            del self.gaps[min(self.gaps)]


#: This process's feed.
FEED = Feed()
