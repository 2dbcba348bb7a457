"""The worker registry: which worker process starts are alive.

Every worker process start registers a row under a fresh id and refreshes
its heartbeat every few seconds. Pages and `brokeforge status` read it to say
"waiting for a worker — none is running" instead of showing a silent
spinner, and a starting worker uses it to end what its previous life on the
same host left running (it knows that life's pid and process start time, so
a reused pid cannot pass for it).
"""

from __future__ import annotations

import logging
import os
import re
import socket
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from brokeforge.lifecycle.models import Operation, OperationState, Worker

logger = logging.getLogger(__name__)


#: The part of a worker id naming the supervisor that started it.
SUPERVISED_ID = re.compile(r":serve-(\d+):")


def lease_seconds() -> int:
    """How long a heartbeat vouches for a worker and its operation."""
    return int(getattr(settings, "BROKEFORGE_LEASE_SECONDS", 15))


def heartbeat_interval() -> float:
    """How often heartbeats are written: a third of the lease, at most 5 s,
    so two can be lost before the lease lapses."""
    return min(5.0, lease_seconds() / 3)


def process_start(pid: int) -> str | None:
    """The boot id and start time of process `pid`, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: count from its end.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None  # a zombie has ended; only its parent has not noticed
    return f"{boot}:{fields[19]}"


def register(worker_id: str) -> Worker:
    """Record this process start as a live worker."""
    now = timezone.now()
    worker, _ = Worker.objects.update_or_create(
        id=worker_id,
        defaults={
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "process_start": process_start(os.getpid()) or "",
            "heartbeat_at": now,
            "stopped_at": None,
            "end_reason": "",
        },
    )
    logger.info(
        "worker %s registered (pid %s)",
        worker_id,
        worker.pid,
        extra={"action": "worker_registered", "worker_id": worker_id},
    )
    return worker


def heartbeat(worker_id: str) -> None:
    Worker.objects.filter(id=worker_id, stopped_at__isnull=True).update(
        heartbeat_at=timezone.now()
    )


def stopped(worker_id: str, reason: str = "stopped") -> None:
    Worker.objects.filter(id=worker_id, stopped_at__isnull=True).update(
        stopped_at=timezone.now(), end_reason=reason
    )


def live(now: datetime | None = None) -> QuerySet[Worker]:
    """Workers whose heartbeat is within the lease."""
    now = now or timezone.now()
    return Worker.objects.filter(
        stopped_at__isnull=True,
        heartbeat_at__gte=now - timedelta(seconds=lease_seconds()),
    )


def mark_silent(now: datetime | None = None) -> int:
    """Mark workers whose heartbeat lapsed as gone (their operations are
    the reaper's, by their own heartbeat)."""
    now = now or timezone.now()
    return Worker.objects.filter(
        stopped_at__isnull=True,
        heartbeat_at__lt=now - timedelta(seconds=lease_seconds()),
    ).update(stopped_at=now, end_reason="no heartbeat within the lease")


def end_previous_lives(current_worker_id: str) -> int:
    """Fail what dead workers on this host left running; run at worker start."""
    return end_dead_here(
        "found when a new worker started",
        by=current_worker_id,
        exclude=current_worker_id,
    )


def _supervisor_alive(worker_id: str) -> bool:
    """Whether the `serve` (or `worker --processes`) that started this worker
    still runs: its id carries the supervisor's pid (see
    `Supervisor.start_worker`)."""
    match = SUPERVISED_ID.search(worker_id)
    if match is None:
        return False
    return process_start(int(match.group(1))) is not None


def end_dead_here(found: str, *, by: str, exclude: str | None = None) -> int:
    """Fail what this host's dead workers left running, without waiting for
    their lease to lapse.

    A worker row on this host whose process is gone (or whose pid now
    belongs to another process, or is a zombie) is marked stopped, and its
    running operations fail at once. Every BrokeForge process on the host
    runs this often (see `reaper.start_reaper_thread`), so a worker killed
    with its supervisor is found within seconds as long as anything of
    BrokeForge still runs here; the lease covers the rest.
    """
    from brokeforge.lifecycle import machine

    hostname = socket.gethostname()
    ended = 0
    candidates = Worker.objects.filter(hostname=hostname, stopped_at__isnull=True)
    if exclude is not None:
        candidates = candidates.exclude(id=exclude)
    for worker in candidates:
        start = process_start(worker.pid)
        if start is not None and start == worker.process_start:
            continue  # that process still runs: it is a live sibling
        if _supervisor_alive(worker.id):
            continue  # its supervisor fails it within 0.2 s, naming the signal
        gone = Worker.objects.filter(id=worker.id, stopped_at__isnull=True).update(
            stopped_at=timezone.now(), end_reason=f"process gone, found by {by}"
        )
        if not gone:
            continue  # another process found it first
        for operation in Operation.objects.filter(
            state=OperationState.RUNNING, worker_id=worker.id
        ):
            reason = (
                f"worker lost: its process (pid {worker.pid} on {hostname}) "
                f"ended without finishing it, {found}; the operation was not "
                "re-run, and the server may have been changed part-way: Retry "
                "checks it again"
            )
            if machine.fail(operation, reason, "worker_lost"):
                ended += 1
    if ended:
        logger.warning(
            "%s failed %s operation(s) this host's dead workers left running",
            by,
            ended,
            extra={"action": "dead_workers_ended", "worker_id": by},
        )
    return ended
