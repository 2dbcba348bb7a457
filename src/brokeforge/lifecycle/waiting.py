"""Honest waiting: what an unfinished operation is waiting for, in words.

Pages and `brokeforge status` show this next to a spinner, so a person
never stares at "pending" without knowing why.
"""

from __future__ import annotations

from django.utils import timezone

from brokeforge.lifecycle import machine, workers
from brokeforge.lifecycle.models import Operation, OperationState

# What apt prints while another process holds the dpkg lock.
LOCK_WAIT_MARKERS = (
    "Waiting for cache lock",
    "Could not get lock",
    "waiting for the package manager lock",  # packages.apt's own retry loop
)


def waiting_reason(operation: Operation) -> str | None:
    """Why `operation` is not done yet, or None when it is simply working."""
    if operation.state == OperationState.QUEUED:
        # A dispatched operation (ready_at set) had nothing ahead of it then,
        # and nothing can queue ahead later: only older operations block.
        ahead = machine.blocker(operation) if operation.ready_at is None else None
        if ahead is not None:
            return f"queued behind {ahead.describe()}, which is {ahead.state}"
        if not workers.live().exists():
            return "waiting for a worker — none is running (start `brokeforge serve`)"
        return "waiting for a free worker"
    if operation.state != OperationState.RUNNING:
        return None
    if operation.cancel_requested_at is not None:
        return f"stopping: cancelled by {operation.cancel_requested_by}"
    tail = operation.output[-4000:].splitlines()[-5:]
    lock_lines = [line for line in tail if line.startswith(LOCK_WAIT_MARKERS)]
    if lock_lines:
        line = lock_lines[-1].removeprefix("Waiting for cache lock: ").rstrip(". ")
        if line.startswith("waiting for"):
            return line
        return f"waiting for the package manager lock: {line}"
    if operation.heartbeat_at is not None:
        silent = (timezone.now() - operation.heartbeat_at).total_seconds()
        if silent > workers.lease_seconds() / 2:
            return (
                f"no word from its worker for {int(silent)} s; it is failed if "
                f"none comes within {workers.lease_seconds()} s"
            )
    return None
