"""The worker loop: takes queued tasks and runs up to N operations at once.

Tasks are django-tasks rows (the database backend), enqueued in the same
transaction as the status change they run. The loop claims as many ready
rows as it has free slots — a claim is a row lock with SKIP LOCKED, so
workers on several machines never take the same one — and runs each in a
thread of its own; their remote work shares the process's event loop
(`lifecycle.loop`).

It learns of new work without a slow poll: on PostgreSQL a listener
connection wakes it on the NOTIFY that `machine.dispatch` sends at commit;
on SQLite (one machine) it looks every `SQLITE_POLL_SECONDS` with a cheap
read that takes no lock. A finished operation wakes it too, so a freed slot
is refilled at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.db import DatabaseError, OperationalError, connections, transaction

from brokeforge.lifecycle import loop, machine, runner
from brokeforge.lifecycle.machine import DISPATCH_CHANNEL
from brokeforge.lifecycle.models import Operation

logger = logging.getLogger(__name__)

#: The task that runs an operation (the only kind BrokeForge enqueues).
OPERATION_TASK = runner.run_operation.module_path

#: Most operations claimed in one transaction. Small batches keep the
#: database's write lock free for the web app's requests in between, and
#: the first operations of a burst start while the rest are claimed.
CLAIM_BATCH = 16

SQLITE_POLL_SECONDS = 0.1
#: On PostgreSQL a notification wakes the loop; this slower look is for a
#: notification lost while the listener reconnected.
POSTGRES_POLL_SECONDS = 2.0
#: How long a stopping worker waits for its operations beyond their grace.
STOP_WAIT_SECONDS = 15.0


def postgres() -> bool:
    return bool(connections["default"].vendor == "postgresql")


class Consumer:
    def __init__(self, worker_id: str, concurrency: int) -> None:
        self.worker_id = worker_id
        self.concurrency = concurrency
        self.wake = threading.Event()
        self.running: set[Future[None]] = set()
        #: Ids of tasks that ran to their end, not yet marked so in the
        #: queue: the loop marks them all in its next transaction.
        self._finished: list[Any] = []
        self._finished_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="bf-op"
        )
        default = POSTGRES_POLL_SECONDS if postgres() else SQLITE_POLL_SECONDS
        given = getattr(settings, "BROKEFORGE_QUEUE_POLL_SECONDS", None)
        self.poll_seconds = float(given or default)

    def run(self) -> bool:
        """Run until asked to stop; True when every operation ended in time."""
        if postgres():
            threading.Thread(target=self._listen, name="bf-listen", daemon=True).start()
        while not runner.SHUTDOWN.is_set():
            self.wake.clear()
            self.running = {f for f in self.running if not f.done()}
            free = self.concurrency - len(self.running)
            if runner.DRAIN.is_set():
                free = 0
            claimed = self._claim(min(free, CLAIM_BATCH))
            for task, operation in claimed:
                future = self._pool.submit(self._run, task, operation)
                future.add_done_callback(lambda _: self.wake.set())
                self.running.add(future)
            if len(claimed) < CLAIM_BATCH:
                self.wake.wait(self.poll_seconds)
        return self._stop()

    def _claim(self, count: int) -> list[tuple[Any, Operation | None]]:
        """Claim up to `count` ready tasks and their operations, and mark the
        finished tasks; each task with its operation, None if the operation
        was not claimable (see `machine.claim`).

        All in one transaction: with many operations at once, a write of its
        own for every claim and every finished task would queue on the
        database's write lock (SQLite has one for the whole database).
        """
        from django_tasks_db.models import DBTaskResult
        from django_tasks_db.utils import (
            exclusive_transaction,
            is_locked_database_exception,
        )

        with self._finished_lock:
            finished, self._finished = self._finished, []
        ready = DBTaskResult.objects.ready().filter(
            backend_name="default", queue_name="default"
        )
        on_postgres = postgres()
        claimed: list[tuple[Any, Operation | None]] = []
        try:
            # A plain read first: on SQLite the claim below locks the whole
            # database, which an idle poll must not do ten times a second.
            if count and not on_postgres and not ready.exists():
                count = 0
            if not count and not finished:
                return []
            with exclusive_transaction(ready.db):
                if on_postgres and not count:
                    # Marking finished tasks is bookkeeping: a mark lost in a
                    # crash leaves a row the reaper ignores, its operation
                    # ended, so this commit need not wait for the disk. A
                    # claim must: it decides who runs the operation.
                    with connections["default"].cursor() as cursor:
                        cursor.execute("SET LOCAL synchronous_commit TO OFF")
                if finished:
                    _mark_successful(finished)
                tasks = list(ready.select_for_update(skip_locked=True)[:count])
                for task in tasks:
                    task.claim(self.worker_id[:64])
                    claimed.append((task, self._claim_operation(task)))
        except DatabaseError as exc:
            with self._finished_lock:
                self._finished.extend(finished)  # marked by a later pass
            if isinstance(exc, OperationalError) and is_locked_database_exception(exc):
                return []  # busy now; the next look takes them
            logger.warning(
                "worker %s could not read the queue: %s",
                self.worker_id,
                exc,
                extra={"action": "queue_read_failed", "worker_id": self.worker_id},
            )
            connections.close_all()
            time.sleep(1.0)
            return []
        return claimed

    def _claim_operation(self, task: Any) -> Operation | None:
        """Claim a task's operation, inside the caller's transaction; None
        when it is not claimable, or for another kind of task."""
        if task.task_path != OPERATION_TASK:
            return None
        operation_id = task.task_result.args[0]
        try:
            with transaction.atomic():
                return machine.claim(operation_id, self.worker_id)
        except DatabaseError:
            raise  # the whole batch is tried again
        except Exception:
            # Left queued; its task looks taken, so the reaper dispatches it
            # again once the lease has passed.
            logger.exception(
                "operation %s could not be claimed",
                operation_id,
                extra={"action": "claim_failed", "operation_id": operation_id},
            )
            return None

    def _run(self, task: Any, operation: Operation | None) -> None:
        """Run one claimed task and record its end in the queue."""
        database = loop.db_executor()
        assert database is not None, "the worker starts its loop first"
        try:
            if operation is not None:
                runner.OperationRunner(operation.pk, self.worker_id).run(operation)
            elif task.task_path != OPERATION_TASK:
                result = task.task_result
                task.task.call(*result.args, **result.kwargs)
            with self._finished_lock:
                self._finished.append(task.id)
        except Exception as exc:
            # The operation's own outcome is already written by the runner;
            # this is the queue's bookkeeping of an unexpected crash.
            logger.exception(
                "task %s crashed",
                task.id,
                extra={"action": "task_crashed", "worker_id": self.worker_id},
            )
            database.submit(runner.durably, task.set_failed, exc).result()

    def _listen(self) -> None:
        """Wake the loop on every dispatch NOTIFY; reconnect when cut off."""
        while not runner.SHUTDOWN.is_set():
            wrapper = connections.create_connection("default")
            try:
                wrapper.connect()
                raw = wrapper.connection
                raw.autocommit = True
                raw.execute(f"LISTEN {DISPATCH_CHANNEL}")
                self.wake.set()  # anything sent while not listening
                while not runner.SHUTDOWN.is_set():
                    for _ in raw.notifies(timeout=5.0, stop_after=1):
                        self.wake.set()
            except Exception as exc:
                logger.warning(
                    "worker %s lost its dispatch listener: %s; polling until "
                    "it is back",
                    self.worker_id,
                    exc,
                    extra={"action": "listener_lost", "worker_id": self.worker_id},
                )
                time.sleep(1.0)
            finally:
                with contextlib.suppress(DatabaseError):
                    wrapper.close()

    def _stop(self) -> bool:
        """Wait a bounded time for the running operations to end."""
        limit = runner.shutdown_grace() + STOP_WAIT_SECONDS
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            self.running = {f for f in self.running if not f.done()}
            if not self.running:
                self._pool.shutdown(wait=True)
                self._claim(0)  # marks the finished tasks
                return True
            self.wake.wait(0.2)
            self.wake.clear()
        return False


def _mark_successful(task_ids: list[Any]) -> None:
    """Mark tasks that ran to their end as django-tasks' `set_successful` does
    (an operation's task returns nothing: its outcome is the operation's)."""
    from django.utils import timezone
    from django_tasks.base import TaskResultStatus
    from django_tasks_db.models import DBTaskResult

    DBTaskResult.objects.filter(id__in=task_ids).update(
        status=TaskResultStatus.SUCCESSFUL,
        finished_at=timezone.now(),
        return_value=None,
        exception_class_path="",
        traceback="",
    )
