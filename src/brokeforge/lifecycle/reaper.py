"""The reaper: ends operations whose worker is gone, so no record stays stuck.

It judges liveness first (the operation's heartbeat, written every few
seconds by the worker running it) and age second (the deadline: the
operation's own timeout plus a grace), so a slow but healthy operation is
never reaped. Every change goes through `machine`, compare-and-set: reapers
in several processes (every worker, the web process, the supervisor) may
run at once, and a worker that wakes up later cannot overwrite what they
wrote.

It also looks after queued operations: one whose task was lost (deleted,
or taken by a worker that died before claiming it) is dispatched again,
which is safe since a claim is a compare-and-set; one that no worker picked
up within `BROKEFORGE_QUEUE_TIMEOUT` is failed, saying so.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connections
from django.db.models import Q
from django.utils import timezone

from brokeforge.lifecycle import machine, spool, workers
from brokeforge.lifecycle.models import Operation, OperationState
from brokeforge.lifecycle.workers import lease_seconds as lease_seconds

logger = logging.getLogger(__name__)


def queue_timeout_seconds() -> int:
    return int(getattr(settings, "BROKEFORGE_QUEUE_TIMEOUT", 1800))


def reap(now: datetime | None = None) -> int:
    """One pass: end what is lost, re-dispatch what was dropped.

    Returns how many operations this call ended.
    """
    now = now or timezone.now()
    # Results this host could not write come first: they carry the real reason.
    ended = spool.replay()
    workers.mark_silent(now)
    ended += _reap_running(now)
    ended += _reap_cancelled(now)
    ended += _reap_queued(now)
    return ended


def _reap_running(now: datetime) -> int:
    """Fail every running operation whose heartbeat or deadline has passed."""
    stale = now - timedelta(seconds=lease_seconds())
    lost = Operation.objects.filter(state=OperationState.RUNNING).filter(
        Q(heartbeat_at__lt=stale) | Q(deadline__lt=now)
    )
    ended = 0
    for operation in lost:
        if operation.heartbeat_at is not None and operation.heartbeat_at < stale:
            silent_for = int((now - operation.heartbeat_at).total_seconds())
            reason = (
                f"worker lost: no heartbeat for {silent_for} s from worker "
                f"{operation.worker_id}; the operation was not re-run, and the "
                "server may have been changed part-way: Retry checks it again"
            )
            reason_class = "worker_lost"
        else:
            reason = (
                f"timed out after {operation.timeout_seconds} s: its worker "
                f"({operation.worker_id}) did not end it by the deadline"
            )
            reason_class = "timed_out"
        if machine.fail(operation, reason, reason_class):
            ended += 1
    return ended


def _reap_cancelled(now: datetime) -> int:
    """End running operations whose worker did not honour a cancel in time."""
    late = now - timedelta(seconds=machine.CANCEL_GRACE_SECONDS)
    ended = 0
    for operation in Operation.objects.filter(
        state=OperationState.RUNNING, cancel_requested_at__lt=late
    ):
        reason = (
            f"cancelled by {operation.cancel_requested_by}; its worker "
            f"({operation.worker_id}) did not stop it within "
            f"{machine.CANCEL_GRACE_SECONDS} s, so the remote command may "
            "still be running until its time limit"
        )
        if machine.fail(operation, reason, "cancelled", state=OperationState.CANCELLED):
            ended += 1
    return ended


def _reap_queued(now: datetime) -> int:
    """Re-dispatch queued operations whose task was lost; fail the forgotten."""
    from django_tasks.base import TaskResultStatus
    from django_tasks_db.models import DBTaskResult

    lease = timedelta(seconds=lease_seconds())
    give_up = now - timedelta(seconds=queue_timeout_seconds())
    queued = list(Operation.objects.filter(state=OperationState.QUEUED).order_by("pk"))
    # The task rows in one read: a burst of queued operations must not cost
    # a query each, every pass, in every process.
    tasks = {
        str(task["id"]): task
        for task in DBTaskResult.objects.filter(
            id__in=[_uuid(op.task_id) for op in queued if op.ready_at]
        ).values("id", "status", "started_at")
    }
    ended = 0
    for operation in queued:
        if operation.ready_at is None and machine.blocker(operation) is not None:
            continue  # it waits its turn; ending the one ahead dispatches it
        if operation.ready_at is not None and operation.ready_at < give_up:
            alive = workers.live(now).count()
            reason = (
                f"no worker picked it up within {queue_timeout_seconds()} s ("
                + (
                    "no worker is running: start `brokeforge serve`"
                    if not alive
                    else f"{alive} worker(s) running, all busy or unable to take it"
                )
                + "); nothing was changed on the server"
            )
            if machine.fail(operation, reason, "not_dispatched"):
                ended += 1
            continue
        task = tasks.get(operation.task_id) if operation.ready_at else None
        lost = (
            task is None
            or task["status"] in (TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED)
            or (
                # taken by a worker that died before claiming it
                task["status"] == TaskResultStatus.RUNNING
                and task["started_at"] is not None
                and task["started_at"] < now - lease
            )
        )
        if lost:
            machine.dispatch(operation)
            logger.warning(
                "operation %s was queued without a live task; dispatched again",
                operation.pk,
                extra={
                    "action": "operation_redispatched",
                    "operation_id": operation.pk,
                },
            )
    return ended


def _uuid(text: str) -> uuid.UUID | None:
    """A task id as stored; None (which matches no row) if it is not one."""
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def fail_worker_operations(worker: str, reason: str, reason_class: str) -> int:
    """Fail what a worker known to be gone still holds (used by the supervisor)."""
    ended = 0
    for operation in Operation.objects.filter(
        state=OperationState.RUNNING, worker_id=worker
    ):
        if machine.fail(operation, reason, reason_class):
            ended += 1
    return ended


#: How often every BrokeForge process looks for dead workers on its host.
LOCAL_CHECK_SECONDS = 1.0


def start_reaper_thread(worker: str | None = None) -> threading.Thread:
    """Run `reap` every few seconds in a daemon thread of this process.

    Every second it also looks for workers of this host whose process is
    gone (a cheap check of /proc), so their operations fail within seconds
    rather than a lease later. In a worker process it refreshes the
    worker's own heartbeat in the registry.
    """
    me = worker or f"the reaper of {socket.gethostname()}:{os.getpid()}"

    def loop() -> None:
        stop = threading.Event()
        last_pass = 0.0
        while not stop.wait(LOCAL_CHECK_SECONDS):
            try:
                workers.end_dead_here(
                    "found by the reaper of another BrokeForge process",
                    by=me,
                    exclude=worker,
                )
                if time.monotonic() - last_pass >= workers.heartbeat_interval():
                    last_pass = time.monotonic()
                    if worker is not None:
                        workers.heartbeat(worker)
                    reap()
            except DatabaseError as exc:
                logger.warning(
                    "reaper could not read the database: %s",
                    exc,
                    extra={"action": "reaper_db_error"},
                )
            finally:
                connections.close_all()

    thread = threading.Thread(target=loop, name="bf-reaper", daemon=True)
    thread.start()
    return thread
