"""The reaper: ends operations whose worker is gone, so no record stays stuck.

It judges liveness first (the operation's heartbeat, written every few
seconds by the worker running it) and age second (the deadline: the
operation's own timeout plus a grace), so a slow but healthy operation is
never reaped. Every change goes through `machine.fail`, a compare-and-set:
reapers in several processes may run at once, and a worker that wakes up
later cannot overwrite what they wrote.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connections
from django.db.models import Q
from django.utils import timezone

from brokeforge.lifecycle import machine
from brokeforge.lifecycle.models import Operation, OperationState

logger = logging.getLogger(__name__)

REAP_INTERVAL = 5.0


def lease_seconds() -> int:
    return int(getattr(settings, "BROKEFORGE_LEASE_SECONDS", 15))


def reap(now: datetime | None = None) -> int:
    """Fail every running operation whose heartbeat or deadline has passed.

    Returns how many operations this call ended.
    """
    now = now or timezone.now()
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


def fail_worker_operations(worker: str, reason: str, reason_class: str) -> int:
    """Fail what a worker known to be gone still holds (used by the supervisor)."""
    ended = 0
    for operation in Operation.objects.filter(
        state=OperationState.RUNNING, worker_id=worker
    ):
        if machine.fail(operation, reason, reason_class):
            ended += 1
    return ended


def start_reaper_thread() -> threading.Thread:
    """Run `reap` every few seconds in a daemon thread of this process."""

    def loop() -> None:
        stop = threading.Event()
        while not stop.wait(REAP_INTERVAL):
            try:
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
