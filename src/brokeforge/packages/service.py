"""What the pages, the CLI and (later) the API call to act on packages.

Every kind goes through the same few functions: `request_action` asks for
an action on a record (creating the record for an install), `retry`
repeats a failed record's last action, and `families` lists a server's
records section by section for a page. Each checks, before anything
changes, that the kind exists, the options are valid, the record's status
allows the action, the record it depends on is active, and nothing depends
on a record about to be removed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, connection, transaction

from brokeforge.accounts import audit
from brokeforge.accounts.actor import Actor
from brokeforge.lifecycle import machine
from brokeforge.lifecycle.errors import ActionRefused
from brokeforge.lifecycle.models import Action, ManagedRecord, Operation, RecordStatus
from brokeforge.packages.base import FAMILIES, PackageKind
from brokeforge.packages.registry import KINDS, get_kind
from brokeforge.servers import access
from brokeforge.servers.models import Server

#: Words a person may use for an action, besides the action's own name.
ACTION_WORDS = {
    "install": Action.INSTALL,
    "create": Action.INSTALL,
    "add": Action.INSTALL,
    "update": Action.UPDATE,
    "remove": Action.REMOVE,
    "drop": Action.REMOVE,
    "delete": Action.REMOVE,
}


def request_action(
    server: Server,
    kind_name: str,
    action: str,
    *,
    user: machine.User = None,
    params: Mapping[str, Any] | None = None,
    record_id: int | None = None,
    actor: Actor | None = None,
) -> Operation:
    """Ask for install (create), update, remove or retry of a record.

    A kind with many records per server creates a new record on install;
    its other actions name the record by `record_id`. Raises
    `ActionRefused`, having changed nothing, when the kind, action or record
    is unknown, the options are wrong, the record's status forbids it, the
    record it depends on is not active, or other records depend on it;
    `access.NotAllowed` when the actor may not change the server. With an
    actor, the request (or its refusal) is written to the audit log.
    """
    if actor is not None:
        access.check_can_change(actor.user, server)
        user = actor.user
    word = ACTION_WORDS.get(action)
    audit_action = f"record.{word.value if word else action}"[:32]
    try:
        # The audit entry commits with the request: one commit, one wait for
        # the database's write lock, and never one without the other.
        with transaction.atomic():
            operation = _request_action(
                server, kind_name, action, user, params, record_id
            )
            detail = ", ".join(f"{k}={v}" for k, v in sorted(operation.params.items()))
            audit.record(
                actor,
                audit_action,
                server=server,
                target=operation.record_label,
                operation=operation,
                detail=detail,
            )
    except ActionRefused as exc:
        target = f"{kind_name} on {server.name}"
        if record_id is not None:
            target = f"{kind_name} #{record_id} on {server.name}"
        audit.record(
            actor,
            audit_action,
            server=server,
            target=target,
            outcome="refused",
            detail=str(exc),
        )
        raise
    return operation


def _request_action(
    server: Server,
    kind_name: str,
    action: str,
    user: machine.User,
    params: Mapping[str, Any] | None,
    record_id: int | None,
) -> Operation:
    kind = get_kind(kind_name)  # an unknown kind is refused before anything else
    if action == "retry":
        return retry(server, kind_name, user=user, record_id=record_id)
    own_words = {word: Action(a) for a, word in kind.verbs.items() if a in Action}
    act = own_words.get(action) or ACTION_WORDS.get(action)
    if act is None:
        raise ActionRefused(
            f"unknown action {action!r}: choose "
            f"{kind.verb('install')}, update, {kind.verb('remove')} or retry"
        )
    try:
        return _request(server, kind, act, user, params or {}, record_id)
    except IntegrityError:
        raise ActionRefused(
            f"another request for {server.name} came at the same moment; "
            "reload to see its status"
        ) from None


def create(
    server: Server,
    kind_name: str,
    params: Mapping[str, Any],
    *,
    user: machine.User = None,
    actor: Actor | None = None,
) -> Operation:
    """Create a record of a kind with many records (its install action)."""
    return request_action(
        server, kind_name, "install", user=user, params=params, actor=actor
    )


def retry(
    server: Server,
    kind_name: str,
    *,
    user: machine.User = None,
    record_id: int | None = None,
) -> Operation:
    kind = get_kind(kind_name)
    record = find_record(server, kind, record_id)
    if record is None:
        raise ActionRefused(
            f"{_what(kind, record_id)} is not on {server.name}: nothing to retry"
        )
    if record.last_action != Action.REMOVE:
        _refuse_missing_parent(kind, record)
    return machine.retry(
        record,
        user=user,
        timeout_seconds=kind.timeout(Action(record.last_action)),
        uses_package_manager=kind.uses_package_manager,
    )


def find_record(
    server: Server, kind: PackageKind, record_id: int | None
) -> ManagedRecord | None:
    """The server's record of `kind`: the only one, or the one with `record_id`."""
    records = kind.records(server)
    if kind.many:
        if record_id is None:
            raise ActionRefused(
                f"say which {kind.label} on {server.name} you mean (its record id; "
                f"see: brokeforge status --server {server.name})"
            )
        return records.filter(pk=record_id).first()
    record: ManagedRecord | None = records.first()
    return record


def _request(
    server: Server,
    kind: PackageKind,
    act: Action,
    user: machine.User,
    params: Mapping[str, Any],
    record_id: int | None,
) -> Operation:
    with transaction.atomic():
        # One request per server at a time: on PostgreSQL this row lock makes
        # the checks below (conflicts, dependencies, duplicates) race-free.
        # SQLite has no row locks; its transactions take the whole database's
        # write lock at BEGIN (settings: IMMEDIATE), which serialises them.
        if connection.features.has_select_for_update:
            Server.objects.select_for_update().filter(pk=server.pk).first()
        if act == Action.INSTALL and (kind.many or not kind.records(server).exists()):
            return _create(server, kind, user, params)
        record = find_record(server, kind, record_id)
        if record is None:
            raise ActionRefused(
                f"{_what(kind, record_id)} is not "
                f"{'on' if kind.many else 'installed on'} {server.name}, "
                f"so there is nothing to {kind.verb(act)}"
            )
        # Say first why the action is impossible, then what is wrong with
        # its options: a busy record's remove needs no data choice explained.
        reason = machine.refusal(record, act)
        if reason:
            raise ActionRefused(reason)
        clean = kind.clean_params(act, params)
        if act == Action.REMOVE:
            _refuse_dependents(record)
        else:
            _refuse_missing_parent(kind, record)
        return machine.request(
            record,
            act,
            user=user,
            params={**kind.identity(record), **clean},
            timeout_seconds=kind.timeout(act),
            uses_package_manager=kind.uses_package_manager,
        )


def _create(
    server: Server, kind: PackageKind, user: machine.User, params: Mapping[str, Any]
) -> Operation:
    clean = kind.clean_params(Action.INSTALL, params)
    _refuse_conflicts(server, kind)
    clash = kind.unique_clash(server, clean)
    if clash is not None:
        raise ActionRefused(f"{clash.label()} exists already")
    record = kind.new_record(server, clean)
    _refuse_missing_parent(kind, record)
    record.status = RecordStatus.PENDING
    record.last_action = Action.INSTALL
    record.save()
    return machine.request(
        record,
        Action.INSTALL,
        user=user,
        params=_shown_params(kind, record, clean),
        timeout_seconds=kind.timeout(Action.INSTALL),
        uses_package_manager=kind.uses_package_manager,
        new_record=True,
    )


def _shown_params(
    kind: PackageKind, record: ManagedRecord, clean: Mapping[str, Any]
) -> dict[str, Any]:
    """The create operation's params: the options and the record's identity,
    never a secret option (the kind keeps that, encrypted, on the record)."""
    secret = {field.name for field in kind.fields if field.secret}
    shown = {key: value for key, value in clean.items() if key not in secret}
    return {**shown, **kind.identity(record)}


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


def get_record(
    server: Server, kind_name: str, record_id: int | None = None
) -> ManagedRecord | None:
    """The server's record of a kind (by id for kinds with many), or None.

    Raises `ActionRefused` for an unknown kind, or a kind with many records
    asked for without an id.
    """
    return find_record(server, get_kind(kind_name), record_id)


def requirements(
    record: ManagedRecord,
) -> list[tuple[PackageKind, dict[str, Any], ManagedRecord | None]]:
    """What `record` depends on: each kind, the lookup that finds the needed
    record among its records on the server, and that record (if any)."""
    kind = get_kind(record.kind_name())
    found = []
    for name, lookup in kind.requires(record):
        needed = get_kind(name)
        parent: ManagedRecord | None = (
            needed.records(record.server).filter(**lookup).first()
        )
        found.append((needed, lookup, parent))
    return found


def _refuse_missing_parent(kind: PackageKind, record: ManagedRecord) -> None:
    for parent_kind, lookup, parent in requirements(record):
        if parent is not None and parent.status == RecordStatus.ACTIVE:
            continue
        needed = (
            parent.label()
            if parent is not None
            else f"{parent_kind.describe_missing(lookup)} on {record.server.name}"
        )
        now = "is not installed" if parent is None else f"is {parent.status}"
        raise ActionRefused(
            f"{kind.label} needs {needed} to be active, and it {now}: "
            f"{parent_kind.verb('install')} it first"
        )


def dependents(record: ManagedRecord) -> list[ManagedRecord]:
    """Records on the same server that depend on `record`."""
    found: list[ManagedRecord] = []
    for kind in KINDS.values():
        if kind.name == record.kind_name():
            continue
        for child in kind.records(record.server):
            if kind.is_parent_of(record, child):
                found.append(child)
    return found


def _refuse_dependents(record: ManagedRecord) -> None:
    children = dependents(record)
    if children:
        names = ", ".join(child.label() for child in children[:5])
        more = f" and {len(children) - 5} more" if len(children) > 5 else ""
        raise ActionRefused(
            f"{record.label()} cannot be removed while {names}{more} "
            "depend on it: remove those first"
        )


def _refuse_conflicts(server: Server, kind: PackageKind) -> None:
    for other_name in sorted(kind.conflicts):
        other = KINDS.get(other_name)
        clash = other.records(server).first() if other else None
        if clash is not None:
            raise ActionRefused(
                f"{kind.label} cannot be installed next to {clash.label()}: "
                f"remove {get_kind(clash.kind_name()).label} first"
            )


def _what(kind: PackageKind, record_id: int | None) -> str:
    return f"{kind.label} #{record_id}" if record_id is not None else kind.label


@dataclass(frozen=True)
class KindRecords:
    """One kind in a server's page section: its records, newest last."""

    kind: PackageKind
    records: list[ManagedRecord]


@dataclass(frozen=True)
class Family:
    """One section of a server's page (databases, php, scheduler, ...)."""

    name: str
    label: str
    kinds: list[KindRecords]


def families(server: Server) -> list[Family]:
    """The server's records, section by section, in the page's order.

    A family with no kind registered yet is left out.
    """
    sections = []
    for name, label in FAMILIES:
        kinds = [
            KindRecords(kind, list(kind.records(server).order_by("pk")))
            for kind in KINDS.values()
            if kind.family == name
        ]
        if kinds:
            sections.append(Family(name, label, kinds))
    return sections


def all_records(server: Server | None = None) -> list[ManagedRecord]:
    """Every record of every kind (on `server`, when given)."""
    seen: set[tuple[type[ManagedRecord], int]] = set()
    found: list[ManagedRecord] = []
    for kind in KINDS.values():
        for record in kind.records(server).select_related("server").order_by("pk"):
            key = (type(record), record.pk)
            if key not in seen:
                seen.add(key)
                found.append(record)
    return found
