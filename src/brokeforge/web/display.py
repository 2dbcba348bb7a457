"""What the pages show, gathered from the models and the state machine."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from brokeforge.lifecycle.machine import allowed_actions
from brokeforge.lifecycle.models import ManagedRecord, Operation, RecordStatus
from brokeforge.packages.apt import BACKUP_DIR
from brokeforge.packages.base import Field, PackageKind
from brokeforge.packages.service import all_records, families
from brokeforge.servers.models import Server

#: The order buttons appear in.
ACTION_ORDER = ("install", "update", "retry", "remove")

#: The answers Remove requires about the data (`AptServiceKind.clean_params`).
DATA_CHOICES = (
    ("keep", f"keep (moved to {BACKUP_DIR})"),
    ("delete", "delete"),
)


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


@dataclass(frozen=True)
class KindSection:
    kind: PackageKind
    rows: list[RecordRow]

    @property
    def create_fields(self) -> tuple[Field, ...]:
        return tuple(self.kind.fields)


@dataclass(frozen=True)
class FamilySection:
    name: str
    label: str
    kinds: list[KindSection]


def record_row(kind: PackageKind, record: ManagedRecord | None) -> RecordRow:
    allowed = allowed_actions(record)
    if kind.many and record is None:
        allowed = set()  # a kind with many records is created by its form
    actions = tuple((a, kind.verb(a)) for a in ACTION_ORDER if a in allowed)
    return RecordRow(
        kind=kind.name,
        package=kind,
        record=record,
        operation=record.current_operation() if record else None,
        actions=actions,
    )


def family_sections(server: Server) -> list[FamilySection]:
    sections = []
    for family in families(server):
        kinds = []
        for entry in family.kinds:
            records: list[ManagedRecord | None] = list(entry.records)
            if not entry.kind.many and not records:
                records = [None]
            rows = [record_row(entry.kind, record) for record in records]
            kinds.append(KindSection(entry.kind, rows))
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


def status_counts(servers: Iterable[Server]) -> dict[int, list[tuple[str, int]]]:
    """Per server id, how many records it has in each status (non-zero only)."""
    counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for server in servers:
        for record in all_records(server):
            counts[record.server_id][record.status] += 1
    return {
        server_id: [(s.value, by[s.value]) for s in RecordStatus if by.get(s.value)]
        for server_id, by in counts.items()
    }
