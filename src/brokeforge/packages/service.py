"""What the pages, the CLI and (later) the API call to act on packages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError, transaction

from brokeforge.accounts import audit
from brokeforge.accounts.actor import Actor
from brokeforge.lifecycle import machine
from brokeforge.lifecycle.errors import ActionRefused
from brokeforge.lifecycle.models import Action, Operation, RecordStatus
from brokeforge.packages.models import Database
from brokeforge.packages.registry import KINDS, get_kind
from brokeforge.servers import access
from brokeforge.servers.models import Server


def request_action(
    server: Server,
    kind_name: str,
    action: str,
    *,
    user: machine.User = None,
    params: Mapping[str, Any] | None = None,
    actor: Actor | None = None,
) -> Operation:
    """Ask for install, update, remove or retry of one kind on one server.

    Raises `ActionRefused`, having changed nothing, when the kind or action
    is unknown, the options are wrong, or the record's status forbids it;
    `access.NotAllowed` when the actor may not change the server. With an
    actor, the request (or its refusal) is written to the audit log.
    """
    if actor is not None:
        access.check_can_change(actor.user, server)
        user = actor.user
    label = f"{kind_name} on {server.name}"
    try:
        operation = _request_action(server, kind_name, action, user, params)
    except ActionRefused as exc:
        audit.record(
            actor,
            f"record.{action}"[:32],
            server=server,
            target=label,
            outcome="refused",
            detail=str(exc),
        )
        raise
    detail = ", ".join(f"{k}={v}" for k, v in sorted(operation.params.items()))
    audit.record(
        actor,
        f"record.{action}",
        server=server,
        target=operation.record_label,
        operation=operation,
        detail=detail,
    )
    return operation


def _request_action(
    server: Server,
    kind_name: str,
    action: str,
    user: machine.User,
    params: Mapping[str, Any] | None,
) -> Operation:
    get_kind(kind_name)  # an unknown kind is refused before anything else
    if action == "retry":
        return retry(server, kind_name, user=user)
    try:
        act = Action(action)
    except ValueError:
        raise ActionRefused(
            f"unknown action {action!r}: choose install, update, remove or retry"
        ) from None
    try:
        return _request(server, kind_name, act, user, params)
    except IntegrityError:
        raise ActionRefused(
            f"another request for {server.name} came at the same moment; "
            "reload to see its status"
        ) from None


def _request(
    server: Server,
    kind_name: str,
    act: Action,
    user: machine.User,
    params: Mapping[str, Any] | None,
) -> Operation:
    kind = get_kind(kind_name)
    with transaction.atomic():
        # One request per server at a time: on PostgreSQL this row lock makes
        # the conflict check (MariaDB vs MySQL) and the create race-free.
        Server.objects.select_for_update().filter(pk=server.pk).first()
        record = Database.objects.filter(server=server, kind=kind.name).first()
        if act == Action.INSTALL and record is None:
            clean = kind.clean_params(act, params or {})
            _refuse_conflicts(server, kind_name)
            record = Database.objects.create(
                server=server,
                kind=kind.name,
                status=RecordStatus.PENDING,
                last_action=Action.INSTALL,
            )
            return machine.request(
                record,
                act,
                user=user,
                params=clean,
                timeout_seconds=kind.timeout(act),
                uses_package_manager=kind.uses_package_manager,
                new_record=True,
            )
        if record is None:
            raise ActionRefused(
                f"{kind.label} is not installed on {server.name}, "
                f"so there is nothing to {act}"
            )
        # Say first why the action is impossible, then what is wrong with
        # its options: a busy record's remove needs no data choice explained.
        reason = machine.refusal(record, act)
        if reason:
            raise ActionRefused(reason)
        clean = kind.clean_params(act, params or {})
        return machine.request(
            record,
            act,
            user=user,
            params=clean,
            timeout_seconds=kind.timeout(act),
            uses_package_manager=kind.uses_package_manager,
        )


def retry(server: Server, kind_name: str, *, user: machine.User = None) -> Operation:
    kind = get_kind(kind_name)
    record = Database.objects.filter(server=server, kind=kind.name).first()
    if record is None:
        raise ActionRefused(f"{kind.label} is not on {server.name}: nothing to retry")
    return machine.retry(
        record,
        user=user,
        timeout_seconds=kind.timeout(Action(record.last_action)),
        uses_package_manager=kind.uses_package_manager,
    )


def cancel_operation(operation: Operation, *, actor: Actor | None = None) -> Operation:
    """Cancel a queued or running operation (see `machine.cancel`).

    Raises `ActionRefused` when it has already ended, `access.NotAllowed`
    when the actor may not change its server.
    """
    if actor is not None:
        access.check_can_change(actor.user, operation.server)
    try:
        cancelled = machine.cancel(operation, user=actor.user if actor else None)
    except ActionRefused as exc:
        audit.record(
            actor,
            "operation.cancel",
            server=operation.server,
            target=operation.describe(),
            operation=operation,
            outcome="refused",
            detail=str(exc),
        )
        raise
    audit.record(
        actor,
        "operation.cancel",
        server=operation.server,
        target=operation.describe(),
        operation=operation,
    )
    return cancelled


def server_records(server: Server) -> list[Database]:
    """Every record on the server, of every kind."""
    return list(Database.objects.filter(server=server).select_related("server"))


def get_record(server: Server, kind_name: str) -> Database | None:
    """The server's record of this kind, or None; ActionRefused if no such kind."""
    kind = get_kind(kind_name)
    return (
        Database.objects.filter(server=server, kind=kind.name)
        .select_related("server")
        .first()
    )


def records_by_kind(server: Server) -> list[tuple[str, Database | None]]:
    """Every known kind with the server's record of it (or None)."""
    records = {r.kind: r for r in Database.objects.filter(server=server)}
    return [(name, records.get(name)) for name in KINDS]


def _refuse_conflicts(server: Server, kind_name: str) -> None:
    kind = get_kind(kind_name)
    clash = Database.objects.filter(server=server, kind__in=kind.conflicts).first()
    if clash is not None:
        raise ActionRefused(
            f"{kind.label} cannot be installed next to {clash.label()}: "
            f"remove {get_kind(clash.kind).label} first"
        )
