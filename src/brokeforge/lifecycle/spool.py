"""Results the database would not take, kept on disk until it does.

When a worker cannot write an operation's result even after retrying on a
fresh connection (the database is down longer than the retries last), it
writes the result here, in the data directory. Every reaper pass on this
host replays the spool: the result lands once the database is back, through
the same fenced compare-and-set as always. If a reaper elsewhere ended the
operation first (its lease lapsed meanwhile), the replayed result is kept in
the operation's output as a late result: the original error text survives
either way.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError

from brokeforge.lifecycle import machine
from brokeforge.lifecycle.models import Operation, OperationState

logger = logging.getLogger(__name__)


def spool_dir() -> Path:
    return Path(settings.HOME) / "spool"


def keep(operation_id: int, worker: str, state: str, message: str, reason: str) -> None:
    """Write a result the database refused; replayed by `replay`."""
    folder = spool_dir()
    folder.mkdir(mode=0o700, exist_ok=True)
    entry = {
        "operation_id": operation_id,
        "worker": worker,
        "state": state,
        "message": message,
        "reason_class": reason,
    }
    path = folder / f"operation-{operation_id}.json"
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(entry))
    os.replace(partial, path)
    logger.error(
        "operation %s: result kept on disk until the database answers",
        operation_id,
        extra={"action": "result_spooled", "operation_id": operation_id},
    )


def replay() -> int:
    """Write every spooled result the database now takes; returns how many."""
    folder = spool_dir()
    if not folder.is_dir():
        return 0
    written = 0
    for path in sorted(folder.glob("operation-*.json")):
        entry: dict[str, Any] = json.loads(path.read_text())
        try:
            operation = Operation.objects.filter(pk=entry["operation_id"]).first()
            if operation is not None:
                if entry["state"] == OperationState.SUCCEEDED:
                    machine.succeed(operation, entry["worker"])
                else:
                    machine.fail(
                        operation,
                        entry["message"],
                        entry["reason_class"],
                        worker_id=entry["worker"],
                        state=OperationState(entry["state"]),
                    )
        except DatabaseError:
            return written  # still away: try again on the next pass
        path.unlink()
        written += 1
        logger.info(
            "operation %s: spooled result replayed",
            entry["operation_id"],
            extra={"action": "result_replayed", "operation_id": entry["operation_id"]},
        )
    return written
