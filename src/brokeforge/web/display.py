"""What the pages show, gathered from the models and the state machine."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from django.db.models import Count, QuerySet

from brokeforge.lifecycle.machine import allowed_actions
from brokeforge.lifecycle.models import Operation, RecordStatus
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


@dataclass(frozen=True)
class DatabaseRow:
    """One kind on one server: its record (if any) and what may be asked of it."""

    kind: str
    label: str
    record: Database | None
    operation: Operation | None
    actions: tuple[str, ...]

    @property
    def status(self) -> str:
        return self.record.status if self.record is not None else ""

    @property
    def is_busy(self) -> bool:
        return self.record is not None and self.record.is_busy


def database_rows(server: Server) -> list[DatabaseRow]:
    rows = []
    for kind_name, record in records_by_kind(server):
        allowed = allowed_actions(record)
        actions = tuple(a for a in ACTION_ORDER if a in allowed)
        rows.append(
            DatabaseRow(
                kind=kind_name,
                label=KINDS[kind_name].label,
                record=record,
                operation=record.current_operation() if record else None,
                actions=actions,
            )
        )
    return rows


def status_counts(
    servers: QuerySet[Server],
) -> dict[int, list[tuple[str, int]]]:
    """Per server id, how many records it has in each status (non-zero only)."""
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    rows = Database.objects.filter(server__in=servers).values("server_id", "status")
    for row in rows.annotate(n=Count("pk")):
        counts[row["server_id"]][row["status"]] = row["n"]
    return {
        server_id: [(s.value, by[s.value]) for s in RecordStatus if by.get(s.value)]
        for server_id, by in counts.items()
    }
