"""The state machine: the one place where statuses and operations change.

Every change is a compare-and-set: an `update()` whose `WHERE` names the
state the caller expects. Zero rows updated means somebody else got there
first (a cancel, a reaper, a deletion); that is a normal outcome, reported
to the caller as `False` or `None`, never papered over. The record's status,
its operation's state and the event log change in one transaction, and the
task that runs an operation is enqueued inside that same transaction.
"""

from __future__ import annotations

import getpass
import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils import timezone

from brokeforge.lifecycle import events
from brokeforge.lifecycle.errors import ActionRefused
from brokeforge.lifecycle.models import (
    TRANSITIONAL_STATUSES,
    UNFINISHED_STATES,
    Action,
    Event,
    ManagedRecord,
    Operation,
    OperationState,
    RecordStatus,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import User as DjangoUser

logger = logging.getLogger(__name__)

#: The status a record takes when an action is requested.
REQUESTED_STATUS = {
    Action.INSTALL: RecordStatus.PENDING,
    Action.UPDATE: RecordStatus.UPDATING,
    Action.REMOVE: RecordStatus.UNINSTALLING,
}

#: The status a record has while the action's operation runs.
RUNNING_STATUS = {
    Action.INSTALL: RecordStatus.INSTALLING,
    Action.UPDATE: RecordStatus.UPDATING,
    Action.REMOVE: RecordStatus.UNINSTALLING,
}

#: Which actions a person may request in each settled status.
ALLOWED_ACTIONS = {
    RecordStatus.ACTIVE: {Action.UPDATE, Action.REMOVE},
    RecordStatus.FAILED: {Action.REMOVE},
}

#: Extra seconds past an operation's timeout before its deadline passes.
DEADLINE_GRACE_SECONDS = 10
#: Seconds a running operation's worker has to honour a cancel before the
#: reaper ends the operation itself.
CANCEL_GRACE_SECONDS = 10
#: The PostgreSQL channel `dispatch` notifies; idle workers listen on it.
DISPATCH_CHANNEL = "brokeforge_dispatch"

User = AbstractBaseUser | AnonymousUser | None


def allowed_actions(record: ManagedRecord | None) -> set[str]:
    """What a person may ask of this record now (Retry included as "retry")."""
    if record is None:
        return {Action.INSTALL}
    allowed: set[str] = set(ALLOWED_ACTIONS.get(RecordStatus(record.status), set()))
    if record.status == RecordStatus.FAILED:
        allowed.add("retry")
    return allowed


def refusal(record: ManagedRecord | None, action: str) -> str | None:
    """Why `action` is not allowed on `record` now, or None if it is."""
    if action in allowed_actions(record):
        return None
    if record is None:
        return f"it is not installed, so there is nothing to {action}"
    label = record.label()
    if record.status in TRANSITIONAL_STATUSES:
        return (
            f"{label} is {record.status}: wait until its {record.last_action} "
            "finishes (or fails) before asking for anything else"
        )
    if record.status == RecordStatus.FAILED:
        return (
            f"{label} failed its last {record.last_action}: use Retry to repeat "
            "it, or Remove"
        )
    if action == Action.INSTALL:
        return f"{label} is already installed"
    if action == "retry":
        return f"{label} is {record.status}: only a failed record can be retried"
    return f"{label} is {record.status}: {action} is not possible now"


def request(
    record: ManagedRecord,
    action: Action,
    *,
    user: User = None,
    params: Mapping[str, Any] | None = None,
    timeout_seconds: int = 600,
    uses_package_manager: bool = True,
    new_record: bool = False,
) -> Operation:
    """Start `action` on `record`: set its status, create and enqueue the operation.

    Must run inside the caller's transaction when `new_record` is true (the
    record was created a moment ago in `REQUESTED_STATUS`). Raises
    `ActionRefused` without changing anything when the action is not allowed.
    """
    with transaction.atomic():
        if not new_record:
            reason = refusal(record, action)
            if reason:
                raise ActionRefused(reason)
            _set_record_status(
                record, RecordStatus(record.status), REQUESTED_STATUS[action], action
            )
        return _create_operation(
            record,
            action,
            user,
            params or {},
            timeout_seconds,
            attempt=1,
            uses_package_manager=uses_package_manager,
        )


def retry(
    record: ManagedRecord,
    *,
    user: User = None,
    timeout_seconds: int = 600,
    uses_package_manager: bool = True,
) -> Operation:
    """Repeat the failed record's last action as a new operation."""
    reason = refusal(record, "retry")
    if reason:
        raise ActionRefused(reason)
    action = Action(record.last_action)
    previous = record.current_operation()
    params = previous.params if previous else {}
    with transaction.atomic():
        _set_record_status(
            record, RecordStatus.FAILED, REQUESTED_STATUS[action], action
        )
        attempt = previous.attempt + 1 if previous else 1
        return _create_operation(
            record,
            action,
            user,
            params,
            timeout_seconds,
            attempt=attempt,
            uses_package_manager=uses_package_manager,
        )


def _set_record_status(
    record: ManagedRecord,
    expected: RecordStatus,
    new: RecordStatus,
    action: Action,
) -> None:
    changed = (
        type(record)
        ._default_manager.filter(pk=record.pk, status=expected)
        .update(
            status=new,
            error_message="",
            last_action=action,
            status_changed_at=timezone.now(),
        )
    )
    if not changed:
        raise ActionRefused(
            f"{record.label()} changed while this request was made; "
            "reload to see its status"
        )
    record.status, record.error_message, record.last_action = new, "", action


def _create_operation(
    record: ManagedRecord,
    action: Action,
    user: User,
    params: Mapping[str, Any],
    timeout_seconds: int,
    *,
    attempt: int,
    uses_package_manager: bool,
) -> Operation:
    """Create the operation and enqueue its task; `attempt` counts retries.

    An operation that must wait for another one on its server (see
    `blocker`) is not enqueued yet: ending the one ahead dispatches it.
    """
    record_type = ContentType.objects.get_for_model(record)
    try:
        with transaction.atomic():
            operation = Operation.objects.create(
                record_type=record_type,
                record_id=record.pk,
                record_label=record.label(),
                kind=record.kind_name(),
                server=record.server,
                action=action,
                params=dict(params),
                attempt=attempt,
                # The person's object, so answering the request needs no query.
                requested_by=cast(
                    "DjangoUser | None",
                    user if user and user.is_authenticated else None,
                ),
                timeout_seconds=timeout_seconds,
                uses_package_manager=uses_package_manager,
            )
    except IntegrityError:
        raise ActionRefused(
            f"{record.label()} already has an operation in progress"
        ) from None
    _append_event(record, record.status, operation)
    ahead = blocker(operation)
    if ahead is None:
        dispatch(operation)
    logger.info(
        "operation %s requested: %s %s%s",
        operation.pk,
        action,
        operation.record_label,
        f", queued behind operation {ahead.pk}" if ahead else "",
        extra={"action": "operation_requested", "operation_id": operation.pk},
    )
    return operation


def blocker(operation: Operation) -> Operation | None:
    """The operation this one waits for on its server, if any.

    Operations that use the server's package manager run one at a time per
    server, in request order: the first unfinished one requested before this
    one goes first. BrokeForge thus never contends with itself for the dpkg
    lock (F15).
    """
    if not operation.uses_package_manager:
        return None
    return (
        Operation.objects.filter(
            server_id=operation.server_id,
            uses_package_manager=True,
            state__in=UNFINISHED_STATES,
            pk__lt=operation.pk,
        )
        .order_by("pk")
        .first()
    )


def dispatch(operation: Operation) -> None:
    """Enqueue the task that runs `operation` (again, if its task was lost).

    Safe to repeat: a claim is a compare-and-set, so of two tasks for one
    operation only one runs it and the other ends at once.
    """
    from brokeforge.lifecycle.runner import run_operation

    now = timezone.now()
    result = run_operation.enqueue(operation.pk)
    ready_at = operation.ready_at or now
    Operation.objects.filter(pk=operation.pk, state=OperationState.QUEUED).update(
        task_id=str(result.id), ready_at=ready_at
    )
    operation.task_id, operation.ready_at = str(result.id), ready_at
    if connection.vendor == "postgresql":
        # Delivered at commit: idle workers wake at once instead of polling
        # (see lifecycle.consumer).
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [DISPATCH_CHANNEL])


def _dispatch_next(server_id: int) -> None:
    """After an operation ended, start the next one waiting on its server."""
    waiting = (
        Operation.objects.filter(
            server_id=server_id,
            uses_package_manager=True,
            state=OperationState.QUEUED,
            ready_at__isnull=True,
        )
        .order_by("pk")
        .first()
    )
    if waiting is not None and blocker(waiting) is None:
        dispatch(waiting)
        logger.info(
            "operation %s dispatched: nothing is ahead of it any more",
            waiting.pk,
            extra={"action": "operation_dispatched", "operation_id": waiting.pk},
        )


def claim(operation_id: int, worker_id: str) -> Operation | None:
    """Take a queued operation for this worker; None if it is not claimable.

    An operation whose record was deleted while it waited is ended here, as
    cancelled, with the reason in its error message.
    """
    now = timezone.now()
    with transaction.atomic():
        # With its server: the runner connects to it next.
        operation = (
            Operation.objects.select_related("server")
            .filter(pk=operation_id, state=OperationState.QUEUED)
            .first()
        )
        if operation is None:
            logger.info(
                "operation %s not claimed: it is no longer queued",
                operation_id,
                extra={"action": "claim_skipped", "operation_id": operation_id},
            )
            return None
        record = _record_of(operation)
        if record is None:
            _end_orphan(operation, "the record was deleted before the operation ran")
            _dispatch_next(operation.server_id)
            return None
        ahead = blocker(operation)
        if ahead is not None:
            # A duplicate or early task: ending `ahead` dispatches this again.
            Operation.objects.filter(pk=operation.pk).update(ready_at=None)
            logger.info(
                "operation %s not claimed: it waits for operation %s",
                operation.pk,
                ahead.pk,
                extra={"action": "claim_deferred", "operation_id": operation.pk},
            )
            return None
        running = {
            "state": OperationState.RUNNING,
            "worker_id": worker_id,
            "started_at": now,
            "heartbeat_at": now,
            "deadline": now
            + timedelta(seconds=operation.timeout_seconds + DEADLINE_GRACE_SECONDS),
        }
        claimed = Operation.objects.filter(
            pk=operation.pk, state=OperationState.QUEUED
        ).update(**running)
        if not claimed:
            return None
        for field, value in running.items():
            setattr(operation, field, value)
        action = Action(operation.action)
        type(record)._default_manager.filter(
            pk=record.pk, status=REQUESTED_STATUS[action]
        ).update(status=RUNNING_STATUS[action], status_changed_at=now)
        record.status = RUNNING_STATUS[action]
        _append_event(record, record.status, operation)
    logger.info(
        "operation %s started on worker %s",
        operation.pk,
        worker_id,
        extra={"action": "operation_started", "operation_id": operation.pk},
    )
    return operation


def succeed(operation: Operation, worker_id: str) -> bool:
    """End a running operation as succeeded; False if it was already ended."""
    with transaction.atomic():
        if not _finish(operation, worker_id, OperationState.SUCCEEDED, "", ""):
            return False
        record = _record_of(operation)
        if record is None:
            logger.warning(
                "operation %s succeeded, but its record was deleted meanwhile",
                operation.pk,
                extra={"action": "record_gone", "operation_id": operation.pk},
            )
            return True
        expected = RUNNING_STATUS[Action(operation.action)]
        records = type(record)._default_manager.filter(pk=record.pk, status=expected)
        if operation.action == Action.REMOVE:
            records.delete()
            _append_event(record, "removed", operation)
        else:
            records.update(
                status=RecordStatus.ACTIVE,
                error_message="",
                status_changed_at=timezone.now(),
            )
            _append_event(record, RecordStatus.ACTIVE, operation)
    logger.info(
        "operation %s succeeded",
        operation.pk,
        extra={"action": "operation_succeeded", "operation_id": operation.pk},
    )
    return True


def fail(
    operation: Operation,
    message: str,
    reason_class: str,
    *,
    worker_id: str | None = None,
    state: OperationState = OperationState.FAILED,
) -> bool:
    """End an unfinished operation as failed (or cancelled) and its record failed.

    With `worker_id`, only that worker's running operation is ended (a late
    worker cannot overwrite what a reaper or a cancel decided). Returns
    False when the operation had already ended.
    """
    with transaction.atomic():
        if not _finish(operation, worker_id, state, message, reason_class):
            return False
        record = _record_of(operation)
        if record is not None:
            changed = (
                type(record)
                ._default_manager.filter(pk=record.pk, status__in=TRANSITIONAL_STATUSES)
                .update(
                    status=RecordStatus.FAILED,
                    error_message=message,
                    status_changed_at=timezone.now(),
                )
            )
            if changed:
                _append_event(record, RecordStatus.FAILED, operation, message)
    logger.error(
        "operation %s failed: %s",
        operation.pk,
        message,
        extra={
            "action": "operation_failed",
            "operation_id": operation.pk,
            "reason_class": reason_class,
        },
    )
    return True


def _finish(
    operation: Operation,
    worker_id: str | None,
    state: OperationState,
    message: str,
    reason_class: str,
) -> bool:
    rows = Operation.objects.filter(pk=operation.pk)
    if worker_id is not None:
        rows = rows.filter(state=OperationState.RUNNING, worker_id=worker_id)
    else:
        rows = rows.filter(state__in=[OperationState.QUEUED, OperationState.RUNNING])
    changed = rows.update(
        state=state,
        finished_at=timezone.now(),
        error_message=message,
        reason_class=reason_class,
    )
    if not changed:
        # Fencing: somebody else (a reaper, a cancel, the supervisor) ended
        # it first. The late result changes nothing but stays on the record.
        late = f"\n== late result from worker {worker_id or '?'} ignored: {state}"
        late += f": {message}\n" if message else "\n"
        Operation.objects.filter(pk=operation.pk).update(
            output=Concat(F("output"), Value(late))
        )
        logger.warning(
            "operation %s already ended; %s result ignored",
            operation.pk,
            state,
            extra={"action": "late_result_ignored", "operation_id": operation.pk},
        )
        return False
    operation.state = state
    operation.error_message = message
    operation.reason_class = reason_class
    _dispatch_next(operation.server_id)
    return True


def cancel(operation: Operation, *, user: User = None) -> Operation:
    """Cancel a queued or running operation on a person's request.

    A queued operation ends at once: it is `cancelled` and its record
    `failed` with "cancelled by <user> before it started", since nothing
    ran on the server. The record is failed rather than restored because
    BrokeForge cannot prove what the server had before (an earlier attempt
    may have changed it); Retry or Remove are then the person's choice.

    A running operation is marked; its worker kills the remote process
    group and ends it within about a second, and the reaper ends it within
    `CANCEL_GRACE_SECONDS` if the worker does not answer.
    """
    who = _user_name(user)
    now = timezone.now()
    with transaction.atomic():
        current = Operation.objects.filter(pk=operation.pk).first()
        if current is None or current.is_finished:
            state = current.state if current else "gone"
            raise ActionRefused(
                f"{operation.describe()} has already ended ({state}): "
                "there is nothing to cancel"
            )
        if current.state == OperationState.QUEUED:
            if fail(
                current,
                f"cancelled by {who} before it started; nothing was changed on "
                "the server",
                "cancelled",
                state=OperationState.CANCELLED,
            ):
                logger.info(
                    "operation %s cancelled by %s while queued",
                    current.pk,
                    who,
                    extra={"action": "operation_cancelled", "operation_id": current.pk},
                )
                return current
            current.refresh_from_db()
            if current.is_finished:
                raise ActionRefused(
                    f"{operation.describe()} ended ({current.state}) while the "
                    "cancel was being made"
                )
        Operation.objects.filter(
            pk=current.pk,
            state=OperationState.RUNNING,
            cancel_requested_at__isnull=True,
        ).update(cancel_requested_at=now, cancel_requested_by=who)
    current.refresh_from_db()
    logger.info(
        "operation %s: cancel requested by %s",
        current.pk,
        who,
        extra={"action": "cancel_requested", "operation_id": current.pk},
    )
    return current


def _user_name(user: User) -> str:
    if user is not None and user.is_authenticated:
        return str(user.get_username())
    return f"{getpass.getuser()} (command line)"


def _end_orphan(operation: Operation, reason: str) -> None:
    Operation.objects.filter(
        pk=operation.pk, state__in=[OperationState.QUEUED, OperationState.RUNNING]
    ).update(
        state=OperationState.CANCELLED,
        finished_at=timezone.now(),
        error_message=reason,
        reason_class="record_deleted",
    )
    logger.warning(
        "operation %s ended: %s",
        operation.pk,
        reason,
        extra={"action": "operation_orphaned", "operation_id": operation.pk},
    )


def _record_of(operation: Operation) -> ManagedRecord | None:
    model = operation.record_type.model_class()
    assert model is not None and issubclass(model, ManagedRecord)
    # With its server, which its label names.
    record: ManagedRecord | None = (
        model._default_manager.select_related("server")
        .filter(pk=operation.record_id)
        .first()
    )
    return record


def _append_event(
    record: ManagedRecord,
    status: str,
    operation: Operation | None,
    error_message: str = "",
) -> None:
    event = Event.objects.create(
        server_id=record.server_id,
        record_type=ContentType.objects.get_for_model(record),
        record_id=record.pk,
        record_label=record.label(),
        status=status,
        error_message=error_message,
        operation=operation,
    )
    events.announce(event)  # NOTIFY at commit on PostgreSQL
