"""Plain dictionaries of servers, records and operations.

The API answers with them and the CLI prints them, locally or fetched from
a remote BrokeForge, so both show the same fields with the same names.
"""

from __future__ import annotations

from typing import Any

from brokeforge.accounts.models import AuditEntry
from brokeforge.lifecycle.machine import allowed_actions
from brokeforge.lifecycle.models import ManagedRecord, Operation
from brokeforge.lifecycle.waiting import waiting_reason
from brokeforge.packages.registry import get_kind
from brokeforge.servers.models import Server

#: The order actions are listed in.
ACTION_ORDER = ("install", "update", "retry", "remove")


def server(s: Server) -> dict[str, Any]:
    return {
        "id": s.pk,
        "name": s.name,
        "host": s.host,
        "port": s.port,
        "user": s.user,
        "owner": s.owner.get_username() if s.owner else None,
        "public_key": s.public_key,
        "host_key_fingerprint": s.host_key_fingerprint or None,
        "created_at": s.created_at,
    }


def operation(op: Operation) -> dict[str, Any]:
    return {
        "id": op.pk,
        "server_id": op.server_id,
        "server": op.server.name,
        "record": op.record_label,
        "kind": op.kind,
        "action": op.action,
        "params": op.params,
        "attempt": op.attempt,
        "state": op.state,
        "requested_by": op.requested_by.get_username() if op.requested_by else None,
        "created_at": op.created_at,
        "started_at": op.started_at,
        "finished_at": op.finished_at,
        "timeout_seconds": op.timeout_seconds,
        "error_message": op.error_message,
        "reason_class": op.reason_class,
        "output_length": op.output_dropped + len(op.output),
        "waiting": waiting_reason(op),
        "cancel_requested_by": op.cancel_requested_by or None,
    }


def record(r: ManagedRecord, current: Operation | None = None) -> dict[str, Any]:
    """A record with its current (or last) operation."""
    op = current if current is not None else r.current_operation()
    kind = r.kind_name()
    allowed = allowed_actions(r)
    return {
        "id": r.pk,
        "kind": kind,
        "label": r.label(),
        "kind_label": get_kind(kind).label,
        "server_id": r.server_id,
        "server": r.server.name,
        "status": r.status,
        "error_message": r.error_message,
        "version": getattr(r, "version", ""),
        "last_action": r.last_action,
        "allowed_actions": [a for a in ACTION_ORDER if a in allowed],
        "operation": operation(op) if op is not None else None,
    }


def generated_secret(
    record: ManagedRecord, action: str, params: dict[str, Any] | None
) -> str | None:
    """The password BrokeForge generated for a record just created, to show
    once to the person who asked; None when they gave one or there is none."""
    kind = get_kind(record.kind_name())
    secret_fields = [f.name for f in kind.fields if f.secret]
    if action != "install" or not secret_fields:
        return None
    if any((params or {}).get(name) for name in secret_fields):
        return None
    return kind.secret(record) or None


def output(op: Operation, offset: int) -> dict[str, Any]:
    """The output from position `offset` of the whole stream on.

    Only the last part of a long output is kept; `skipped` says how many
    characters after `offset` are no longer stored.
    """
    start = max(offset, op.output_dropped)
    end = op.output_dropped + len(op.output)
    start = min(start, end)
    return {
        "operation_id": op.pk,
        "state": op.state,
        "offset": start,
        "skipped": start - min(offset, end),
        "text": op.output[start - op.output_dropped :],
        "next_offset": end,
        "finished": op.is_finished,
        "error_message": op.error_message,
    }


def audit_entry(e: AuditEntry) -> dict[str, Any]:
    return {
        "id": e.pk,
        "at": e.at,
        "user": e.username,
        "token": e.token_name or None,
        "via": e.via,
        "address": e.address,
        "action": e.action,
        "server_id": e.server_id,
        "server": e.server_name or None,
        "target": e.target,
        "operation_id": e.operation_id,
        "outcome": e.outcome,
        "detail": e.detail,
    }
