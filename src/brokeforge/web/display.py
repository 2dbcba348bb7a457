"""What the pages show, gathered from the models and the state machine.

The server page is made of *families* (databases today; PHP, nginx, the
firewall and the rest as the catalog grows). Each family says which record
model it shows and how to build its rows, so the page, the row partial and
the event stream all work from the one list in `FAMILIES`.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, QuerySet
from django.utils import timezone

from brokeforge.lifecycle.machine import allowed_actions
from brokeforge.lifecycle.models import (
    Event,
    ManagedRecord,
    Operation,
    OperationState,
    RecordStatus,
)
from brokeforge.lifecycle.waiting import waiting_reason
from brokeforge.packages.apt import BACKUP_DIR
from brokeforge.packages.models import Database
from brokeforge.packages.registry import KINDS
from brokeforge.packages.service import records_by_kind
from brokeforge.servers.models import Server

#: The order buttons appear in.
ACTION_ORDER = ("install", "update", "retry", "remove")

#: The answers Remove requires about the data (`AptServiceKind.clean_params`).
DATA_CHOICES = (
    ("keep", f"keep (moved to {BACKUP_DIR})"),
    ("delete", "delete"),
)

#: How many lines of a failed record's error the row shows; the operation
#: page has all of it and the output.
ERROR_PREVIEW_LINES = 4
ERROR_PREVIEW_CHARS = 600

#: An operation is "taking longer than usual" past this many times the
#: median of earlier successes, and at least `SLOW_MARGIN` past it.
SLOW_FACTOR = 2
SLOW_MARGIN = timedelta(seconds=30)
#: How many earlier successes the median is taken over (the newest ones).
SLOW_SAMPLE = 20

#: What a badge says next to its colour, so status never rests on colour.
STATUS_SYMBOLS = {
    "pending": "…",
    "installing": "⟳",
    "updating": "⟳",
    "uninstalling": "⟳",
    "active": "✓",
    "failed": "✗",
    "queued": "…",
    "running": "⟳",
    "succeeded": "✓",
    "cancelled": "⊘",
}


@dataclass(frozen=True)
class RecordRow:
    """One row of a family's table: a record (or a free slot) and its actions."""

    #: Unique on the page and stable across changes, e.g. "db-redis";
    #: the row's element id, its partial's URL and its event name.
    key: str
    kind: str
    label: str
    record: ManagedRecord | None
    operation: Operation | None
    actions: tuple[str, ...]
    version: str = ""
    #: Why a busy record is not moving yet, or that it is slow; "" if neither.
    waiting: str = ""

    @property
    def status(self) -> str:
        return self.record.status if self.record is not None else ""

    @property
    def is_busy(self) -> bool:
        return self.record is not None and self.record.is_busy

    @property
    def can_cancel(self) -> bool:
        """Cancel is offered while the record's operation is queued or running."""
        return self.operation is not None and not self.operation.is_finished

    @property
    def error_preview(self) -> str:
        """The first lines of a failed record's error."""
        if self.record is None or self.record.status != RecordStatus.FAILED:
            return ""
        return preview(self.record.error_message)

    @property
    def error_is_cut(self) -> bool:
        return self.error_preview != (
            self.record.error_message.strip() if self.record else ""
        )


@dataclass(frozen=True)
class Family:
    """A section of the server page: one record model and its rows."""

    name: str
    title: str
    model: type[ManagedRecord]
    #: Every row of this family on a server, in display order.
    rows: Callable[[Server], list[RecordRow]]
    #: The row a key names, or None if the key is not one of this family's.
    row: Callable[[Server, str], RecordRow | None]


def preview(text: str) -> str:
    lines = text.strip().splitlines()[:ERROR_PREVIEW_LINES]
    shown = "\n".join(lines)
    if len(shown) > ERROR_PREVIEW_CHARS:
        shown = shown[:ERROR_PREVIEW_CHARS].rstrip() + " …"
    return shown


def _database_row(kind_name: str, record: Database | None) -> RecordRow:
    allowed = allowed_actions(record)
    operation = record.current_operation() if record else None
    return RecordRow(
        key=row_key(kind_name, record.pk if record else 0),
        kind=kind_name,
        label=KINDS[kind_name].label,
        record=record,
        operation=operation,
        actions=tuple(a for a in ACTION_ORDER if a in allowed),
        version=record.version if record else "",
        waiting=waiting_text(operation) if record and record.is_busy else "",
    )


def database_rows(server: Server) -> list[RecordRow]:
    return [_database_row(kind, record) for kind, record in records_by_kind(server)]


def database_row(server: Server, key: str) -> RecordRow | None:
    kind_name = key.removeprefix("db-")
    if not key.startswith("db-") or kind_name not in KINDS:
        return None
    record = Database.objects.filter(server=server, kind=kind_name).first()
    return _database_row(kind_name, record)


# Shortcoming: only the database family exists until the catalog generalizes
# package kinds (branch `catalog`, /work/coord/catalog-contract.md); then the
# page's sections come from its `family_sections` and each row from its
# `record_row`, with the keys below (the catalog's row ids).
FAMILIES: Sequence[Family] = (
    Family(
        name="databases",
        title="Databases",
        model=Database,
        rows=database_rows,
        row=database_row,
    ),
)


def row_key(kind_name: str, record_id: int) -> str:
    """A row's key: "db-redis" for a one-per-server kind, "rec-KIND-ID" otherwise.

    The key is the row's element id, its partial's URL and its event name.
    """
    if getattr(KINDS.get(kind_name), "many", False):
        return f"rec-{kind_name}-{record_id}"
    return f"db-{kind_name}"


def row_by_key(server: Server, key: str) -> RecordRow | None:
    """The row a key such as "db-redis" names, or None."""
    for family in FAMILIES:
        row = family.row(server, key)
        if row is not None:
            return row
    return None


def row_key_of(event: Event) -> str | None:
    """The key of the row an event changes.

    The event's operation names the kind even when the record is gone (a
    removal); every event the state machine writes has one.
    """
    if event.operation is None:
        return None
    return row_key(event.operation.kind, event.record_id)


def operations_of(server: Server, key: str = "") -> QuerySet[Operation]:
    """The server's operations, newest first; with a row key, that row's only.

    A one-per-server row's history spans its records (installed, removed,
    installed again); a row of a kind with many records is that record's.
    """
    operations = server.operations.order_by("-id")
    if key.startswith("db-"):
        return operations.filter(kind=key.removeprefix("db-"))
    if key.startswith("rec-"):
        kind, _, record_id = key.removeprefix("rec-").rpartition("-")
        if record_id.isdigit():
            return operations.filter(kind=kind, record_id=int(record_id))
    return operations if not key else operations.none()


def sections(server: Server) -> list[tuple[Family, list[RecordRow]]]:
    return [(family, family.rows(server)) for family in FAMILIES]


def typical_duration(operation: Operation) -> timedelta | None:
    """The median duration of earlier successes of this kind and action."""
    earlier = (
        Operation.objects.filter(
            kind=operation.kind,
            action=operation.action,
            state=OperationState.SUCCEEDED,
            started_at__isnull=False,
            finished_at__isnull=False,
            pk__lt=operation.pk,
        )
        .order_by("-pk")
        .values_list("started_at", "finished_at")[:SLOW_SAMPLE]
    )
    durations = [
        (end - start).total_seconds() for start, end in earlier if start and end
    ]
    if not durations:
        return None
    return timedelta(seconds=statistics.median(durations))


def slowness(operation: Operation, now: datetime | None = None) -> str:
    """ "taking longer than usual …" for a running operation well past its norm."""
    if operation.state != OperationState.RUNNING or operation.started_at is None:
        return ""
    typical = typical_duration(operation)
    if typical is None:
        return ""
    elapsed = (now or timezone.now()) - operation.started_at
    if elapsed < max(typical * SLOW_FACTOR, typical + SLOW_MARGIN):
        return ""
    return (
        f"taking longer than usual: running for {duration_text(elapsed)}, "
        f"usually done in {duration_text(typical)}"
    )


def waiting_text(operation: Operation | None, now: datetime | None = None) -> str:
    """Why an unfinished operation is where it is, in a person's words.

    The lifecycle's own reason (queued behind another operation, no worker,
    the package manager lock, a silent worker) comes first; "taking longer
    than usual" is added from the history of this kind and action.
    """
    if operation is None or operation.is_finished:
        return ""
    reasons = [waiting_reason(operation) or "", slowness(operation, now)]
    return "; ".join(r for r in reasons if r)


def duration_text(span: timedelta) -> str:
    """A span as a person reads it: "12 s", "3 min 5 s"."""
    total = int(span.total_seconds())
    if total < 120:
        return f"{total} s"
    return f"{total // 60} min {total % 60} s"


def status_counts() -> dict[int, list[tuple[str, int]]]:
    """Per server id, how many records it has in each status (non-zero only)."""
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    for row in Database.objects.values("server_id", "status").annotate(n=Count("pk")):
        counts[row["server_id"]][row["status"]] = row["n"]
    return {
        server_id: [(s.value, by[s.value]) for s in RecordStatus if by.get(s.value)]
        for server_id, by in counts.items()
    }
