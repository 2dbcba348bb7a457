"""What the pages show, gathered from the models and the state machine.

The server page is made of *families* (databases, PHP, nginx, the firewall
and the rest: `packages.base.FAMILIES`), each with its kinds and their
records (`packages.service.families`). Every row has a key (`row_key`) that
the page, the row partial and the event stream share.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.db.models import QuerySet
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
from brokeforge.packages.base import Field, PackageKind
from brokeforge.packages.registry import KINDS
from brokeforge.packages.service import all_records, families
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
    """One record (or, for a one-per-server kind, its absence) and its buttons."""

    #: The kind's name.
    kind: str
    package: PackageKind
    record: ManagedRecord | None
    operation: Operation | None
    #: (action, the word shown for it) in button order.
    actions: tuple[tuple[str, str], ...]
    #: Why a busy record is not moving yet, or that it is slow; "" if neither.
    waiting: str = ""

    @property
    def key(self) -> str:
        """Unique on the page and stable across changes: "db-redis",
        "rec-sql_database-4"; the row's element id, its partial's URL and its
        event name."""
        return row_key(self.kind, self.record.pk if self.record else 0)

    @property
    def label(self) -> str:
        if self.record is not None and self.package.many:
            return self.package.describe(self.record)
        return self.package.label

    @property
    def status(self) -> str:
        return self.record.status if self.record is not None else ""

    @property
    def is_busy(self) -> bool:
        return self.record is not None and self.record.is_busy

    @property
    def version(self) -> str:
        return str(getattr(self.record, "version", "") or "")

    @property
    def details(self) -> str:
        return self.package.details(self.record) if self.record is not None else ""

    @property
    def has_secret(self) -> bool:
        return self.record is not None and any(f.secret for f in self.package.fields)

    @property
    def remove_fields(self) -> tuple[Field, ...]:
        return tuple(self.package.remove_fields)

    @property
    def update_fields(self) -> tuple[Field, ...]:
        return tuple(self.package.update_fields)

    @property
    def can_cancel(self) -> bool:
        """Cancel is offered while the record's operation is queued or running."""
        return self.operation is not None and not self.operation.is_finished

    @property
    def remove_word(self) -> str:
        return self.package.verb("remove")

    @property
    def cancel_word(self) -> str:
        """What the Cancel button stops: "install", "add", "delete"..."""
        return self.package.verb(self.operation.action) if self.operation else ""

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
class FormEntry:
    """One field of a form as shown: its value and what is wrong with it."""

    field: Field
    value: str
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class KindSection:
    kind: PackageKind
    rows: list[RecordRow]
    #: The create form as sent back with errors; empty shows the defaults.
    entries: tuple[FormEntry, ...] = ()
    #: What the kind refused about the whole form, shown at its top.
    form_errors: tuple[str, ...] = ()

    @property
    def create_fields(self) -> tuple[Field, ...]:
        return tuple(self.kind.fields)

    @property
    def create_entries(self) -> tuple[FormEntry, ...]:
        if self.entries:
            return self.entries
        return tuple(FormEntry(f, f.default) for f in self.kind.fields)


@dataclass(frozen=True)
class FamilySection:
    name: str
    label: str
    kinds: list[KindSection]

    @property
    def single_rows(self) -> list[RecordRow]:
        """The rows of the kinds with one record per server, in one table."""
        return [row for k in self.kinds if not k.kind.many for row in k.rows]

    @property
    def many_kinds(self) -> list[KindSection]:
        """The kinds with many records: a table and a create form each."""
        return [k for k in self.kinds if k.kind.many]


def preview(text: str) -> str:
    lines = text.strip().splitlines()[:ERROR_PREVIEW_LINES]
    shown = "\n".join(lines)
    if len(shown) > ERROR_PREVIEW_CHARS:
        shown = shown[:ERROR_PREVIEW_CHARS].rstrip() + " …"
    return shown


def with_create_errors(
    sections: list[FamilySection],
    kind_name: str,
    entries: tuple[FormEntry, ...],
    form_errors: tuple[str, ...],
) -> list[FamilySection]:
    """The sections with one kind's create form shown as sent, with its errors."""

    def mark(section: KindSection) -> KindSection:
        if section.kind.name != kind_name:
            return section
        return replace(section, entries=entries, form_errors=form_errors)

    return [
        replace(family, kinds=[mark(k) for k in family.kinds]) for family in sections
    ]


def record_row(kind: PackageKind, record: ManagedRecord | None) -> RecordRow:
    allowed = allowed_actions(record)
    if kind.many and record is None:
        allowed = set()  # a kind with many records is created by its form
    actions = tuple((a, kind.verb(a)) for a in ACTION_ORDER if a in allowed)
    operation = record.current_operation() if record else None
    return RecordRow(
        kind=kind.name,
        package=kind,
        record=record,
        operation=operation,
        actions=actions,
        waiting=waiting_text(operation) if record and record.is_busy else "",
    )


def kind_section(server: Server, kind: PackageKind) -> KindSection:
    records: list[ManagedRecord | None] = list(kind.records(server).order_by("pk"))
    if not kind.many and not records:
        records = [None]
    return KindSection(kind, [record_row(kind, record) for record in records])


def family_sections(server: Server) -> list[FamilySection]:
    sections = []
    for family in families(server):
        kinds = [kind_section(server, entry.kind) for entry in family.kinds]
        sections.append(FamilySection(family.name, family.label, kinds))
    return sections


def database_rows(server: Server) -> list[RecordRow]:
    """The one-per-server database kinds (Redis, MariaDB, MySQL) and their rows."""
    rows = []
    for section in family_sections(server):
        for kind in section.kinds:
            if section.name == "databases" and not kind.kind.many:
                rows.extend(kind.rows)
    return rows


def row_key(kind_name: str, record_id: int) -> str:
    """A row's key: "db-redis" for a one-per-server kind, "rec-KIND-ID" otherwise."""
    kind = KINDS.get(kind_name)
    if kind is not None and kind.many:
        return f"rec-{kind_name}-{record_id}"
    return f"db-{kind_name}"


def row_by_key(server: Server, key: str) -> RecordRow | None:
    """The row a key such as "db-redis" or "rec-sql_database-4" names, or None."""
    if key.startswith("db-"):
        kind = KINDS.get(key.removeprefix("db-"))
        if kind is None or kind.many:
            return None
        return record_row(kind, kind.records(server).first())
    kind_name, _, record_id = key.removeprefix("rec-").rpartition("-")
    kind = KINDS.get(kind_name)
    if not key.startswith("rec-") or kind is None or not kind.many:
        return None
    if not record_id.isdigit():
        return None
    record = kind.records(server).filter(pk=int(record_id)).first()
    return record_row(kind, record) if record is not None else None


def row_key_of(event: Event) -> str | None:
    """The key of the row an event changes.

    The event's operation names the kind even when the record is gone (a
    removal); every event the state machine writes has one.
    """
    if event.operation is None:
        return None
    return row_key(event.operation.kind, event.record_id)


def kind_of(event: Event) -> str | None:
    """The kind whose list of records an event changes (a record of a kind
    with many was created or removed), or None."""
    if event.operation is None:
        return None
    kind = KINDS.get(event.operation.kind)
    if kind is None or not kind.many:
        return None
    created = event.status == RecordStatus.PENDING and event.operation.attempt == 1
    return kind.name if created or event.status == "removed" else None


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
    counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for record in all_records():
        counts[record.server_id][record.status] += 1
    return {
        server_id: [(s.value, by[s.value]) for s in RecordStatus if by.get(s.value)]
        for server_id, by in counts.items()
    }
