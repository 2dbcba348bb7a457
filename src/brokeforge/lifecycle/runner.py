"""The runner: executes one operation as a `django.tasks` task.

It claims the operation, runs the package kind's scripts over SSH while
streaming their output into the ledger, verifies the result on the host and
ends the operation. Whatever goes wrong (an expected `OperationFailure` or a
crash) ends the operation `failed` with a readable reason; the write of that
result is retried while the database is briefly unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from functools import cache
from typing import Any, TypeVar

from django.conf import settings
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    connections,
    transaction,
)
from django.utils import timezone
from django_tasks import task

from brokeforge.lifecycle import loop, machine, spool, workers
from brokeforge.lifecycle.errors import (
    OperationCancelled,
    OperationFailure,
    StuckPastDeadline,
    WorkerShutdown,
)
from brokeforge.lifecycle.models import Action, Operation, OperationState

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_OUTPUT_CHARS = 256 * 1024
MAX_REASON_LINE = 500
FLUSH_INTERVAL = 1.0
FACTS_TIMEOUT = 30
VERIFY_TIMEOUT = 90
# stderr lines that never explain a failure (apt's routine remarks).
NOISE_PREFIXES = ("debconf: ", "dpkg-preconfigure: ", "W: ")
# Backoff for writing a result while the database is away: about 30 s in all.
DB_RETRY_DELAYS = (0.2, 0.5, 1, 2, 4, 8, 15)
#: How often a running operation looks for a cancel request.
CANCEL_POLL_INTERVAL = 1.0
#: Seconds past an operation's deadline before the watchdog ends the worker.
WATCHDOG_GRACE_SECONDS = 5.0

#: Set when this worker process is asked to stop (see `supervisor.worker`):
#: it takes no new work, and the running operations get a bounded grace.
SHUTDOWN = threading.Event()
#: Set when asked to stop a second time: no grace, stop everything now.
SHUTDOWN_NOW = threading.Event()
#: Set by the watchdog when an operation is stuck in this process: take no
#: new work, and end the process once the healthy operations are done.
DRAIN = threading.Event()
#: The operations this process runs now, by id, for the watchdog.
_running: dict[int, OperationRunner] = {}
_running_lock = threading.Lock()


def running_count() -> int:
    with _running_lock:
        return len(_running)


def shutdown_grace() -> float:
    return float(getattr(settings, "BROKEFORGE_SHUTDOWN_GRACE", 5))


@cache
def worker_id() -> str:
    """This process start's identity: a fresh id every start, never reused.

    `brokeforge serve` hands each worker it starts an id in
    `BROKEFORGE_WORKER_ID`, so it can name the worker's operations when the
    process exits.
    """
    given = os.environ.get("BROKEFORGE_WORKER_ID")
    if given:
        return given
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@task()
def run_operation(operation_id: int) -> None:
    OperationRunner(operation_id, worker_id()).run()


def durably(write: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Run a database write, retrying on a fresh connection while it fails.

    Returns None when the database stayed away for every attempt; the
    operation's lease then lapses and the reaper ends it later.
    """
    for delay in (*DB_RETRY_DELAYS, None):
        try:
            return write(*args, **kwargs)
        except (OperationalError, InterfaceError) as exc:
            logger.warning(
                "database write failed (%s); %s",
                exc,
                f"retrying in {delay} s" if delay else "giving up",
                extra={"action": "db_write_retry"},
            )
            connections.close_all()
            if delay is None:
                return None
            time.sleep(delay)
    return None


class OperationRunner:
    def __init__(self, operation_id: int, worker: str) -> None:
        self.operation_id = operation_id
        self.worker = worker
        self.output: list[str] = []
        self.output_chars = 0
        #: Characters dropped from the head to keep the stored output bounded.
        self.dropped = 0
        self._last_flush = 0.0
        #: The flush of output that came since the last one, when one is due.
        self._flush_due: asyncio.Task[None] | None = None
        self.operation: Operation | None = None
        #: Monotonic time past which the operation is overdue.
        self.deadline = float("inf")
        #: Set from another thread (the watchdog) to stop the work.
        self.stop_reason: OperationFailure | None = None
        #: Whether the action's script was started on the server.
        self.script_started = False
        #: When the watchdog failed this operation (monotonic), if it did.
        self.abandoned_at: float | None = None
        # Database work from inside the event loop goes to other threads, so
        # the loop never blocks on it: the worker's shared ones, or one of its
        # own (whose connection is closed at the end) outside a worker.
        shared = loop.db_executor()
        self._own_db = shared is None
        self._db = shared or ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="bf-db"
        )
        #: This operation's database work not yet done: the runner waits for
        #: it before letting go, so work stuck there keeps it visible to the
        #: watchdog.
        self._pending: set[Future[Any]] = set()

    def run(self, claimed: Operation | None = None) -> None:
        """Claim the operation and run it; or run `claimed`, which this
        worker claimed already (the consumer claims a batch at once)."""
        if claimed is not None:
            operation: Operation | None = claimed
            if SHUTDOWN.is_set():
                self._end(
                    machine.fail,
                    claimed,
                    "interrupted by a worker shutdown before it began; nothing "
                    "was changed on the server: Retry runs it",
                    "worker_shutdown",
                )
                return
        else:
            if SHUTDOWN.is_set():
                return  # a stopping worker takes no new work; the reaper re-dispatches
            shared_loop = loop.running()
            if shared_loop is not None:
                # Open the server's connection while the claim commits: the
                # session then finds it in the pool.
                asyncio.run_coroutine_threadsafe(self._warm_up(), shared_loop)
            operation = self._in_db_now(
                durably, machine.claim, self.operation_id, self.worker
            )
        if operation is None:
            return
        self.operation = operation
        self.deadline = (
            time.monotonic()
            + operation.timeout_seconds
            + machine.DEADLINE_GRACE_SECONDS
        )
        with _running_lock:
            _running[operation.pk] = self
        try:
            loop.run(self._execute(operation))
        except OperationCancelled as exc:
            self._log(f"\n== cancelled: {exc.message}\n")
            self._end(
                machine.fail,
                operation,
                exc.message,
                exc.reason_class,
                state=OperationState.CANCELLED,
            )
        except OperationFailure as exc:
            self._log(f"\n== failed: {exc.message}\n")
            self._end(machine.fail, operation, exc.message, exc.reason_class)
        except (KeyboardInterrupt, SystemExit):
            # The worker is being stopped mid-task: say so before going.
            message = "interrupted by a worker shutdown"
            self._log(f"\n== failed: {message}\n")
            self._end(machine.fail, operation, message, "worker_shutdown")
            raise
        except Exception as exc:
            logger.exception(
                "operation %s crashed",
                operation.pk,
                extra={"action": "operation_crashed", "operation_id": operation.pk},
            )
            message = f"BrokeForge crashed: {type(exc).__name__}: {exc}"
            self._log(f"\n== failed: {message}\n")
            self._end(machine.fail, operation, message, "crashed")
        else:
            self._log("\n== succeeded\n")
            self._end(machine.succeed, operation)
        finally:
            _batch.discard(self)  # its end wrote the output
            # Work stuck in a database thread keeps this operation listed,
            # where the watchdog sees it.
            wait_futures(list(self._pending))
            with _running_lock:
                _running.pop(operation.pk, None)
            if self._own_db:
                self._db.submit(connections.close_all).result()
                self._db.shutdown()

    async def _warm_up(self) -> None:
        """Connect to the operation's server ahead of its session.

        Only where the host key is pinned (the pool serves only those), and
        silently: whatever goes wrong, the session meets it again and says
        so. An operation another worker claimed leaves an idle connection
        that closes after its idle bound.
        """
        from brokeforge.servers.models import Server
        from brokeforge.servers.ssh import SSHSession

        def target() -> Any:
            server = Server.objects.filter(operations__pk=self.operation_id).first()
            return server.ssh_target() if server is not None else None

        with contextlib.suppress(Exception):
            found = await self._in_db(target)
            if found is not None and found.pinned_host_key:
                timeout = settings.BROKEFORGE_CONNECT_TIMEOUT
                async with SSHSession(found, connect_timeout=timeout):
                    pass

    def _in_db_now(self, work: Callable[..., T], *args: Any) -> T:
        """Database work from this operation's own thread, waited for.

        In a worker it runs on the shared database threads, so the threads
        that run operations hold no connection of their own and the count
        of connections does not grow with `--concurrency`.
        """
        if self._own_db:
            return work(*args)
        return self._db.submit(work, *args).result()

    def _end(
        self,
        finish: Callable[..., bool],
        operation: Operation,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        self._in_db_now(self._write_end, finish, operation, args, kwargs)

    def _write_end(
        self,
        finish: Callable[..., bool],
        operation: Operation,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        def flush_and_finish() -> bool:
            # One transaction: a write lock waited for once, not twice.
            with transaction.atomic():
                self._flush()
                return finish(operation, *args, worker_id=self.worker, **kwargs)

        try:
            ended = durably(flush_and_finish)
        except DatabaseError:
            # The result matters more than the output: output the database
            # refuses must not keep the operation from ending.
            logger.exception(
                "operation %s: output could not be saved",
                operation.pk,
                extra={"action": "output_flush_failed", "operation_id": operation.pk},
            )
            ended = durably(finish, operation, *args, worker_id=self.worker, **kwargs)
        if ended is None:
            # The database stayed away: keep the result for a later pass.
            if finish is machine.succeed:
                state, message, reason = OperationState.SUCCEEDED, "", ""
            else:
                message, reason = args
                state = kwargs.get("state", OperationState.FAILED)
            spool.keep(operation.pk, self.worker, state, message, reason)

    async def _execute(self, operation: Operation) -> None:
        """Do the work, stopping it from outside on a cancel or a shutdown.

        Cancelling the work's task kills the remote process group (see
        `SSHSession.run`) before the failure is written.
        """
        work = asyncio.create_task(self._work(operation))
        stop: list[OperationFailure] = []
        watch = asyncio.create_task(self._watch(operation, work, stop))
        try:
            await work
        except asyncio.CancelledError:
            if stop:
                raise stop[0] from None
            raise
        finally:
            watch.cancel()

    async def _watch(
        self,
        operation: Operation,
        work: asyncio.Task[None],
        stop: list[OperationFailure],
    ) -> None:
        shutdown_seen: float | None = None
        last_poll = time.monotonic()
        while not work.done():
            await asyncio.sleep(0.2)
            now = time.monotonic()
            if self.stop_reason is not None:
                stop.append(self.stop_reason)
                work.cancel()
                return
            if SHUTDOWN_NOW.is_set():
                stop.append(
                    WorkerShutdown(
                        "interrupted by a worker shutdown: BrokeForge was "
                        f"stopped at once; {self._aftermath()}"
                    )
                )
                work.cancel()
                return
            if SHUTDOWN.is_set():
                shutdown_seen = shutdown_seen or now
                if now - shutdown_seen >= shutdown_grace():
                    stop.append(
                        WorkerShutdown(
                            "interrupted by a worker shutdown: BrokeForge was "
                            f"stopped and the operation did not end within "
                            f"{shutdown_grace():g} s; {self._aftermath()}"
                        )
                    )
                    work.cancel()
                    return
            if now - last_poll >= CANCEL_POLL_INTERVAL:
                last_poll = now
                who = await self._in_db(self._cancel_requested_by)
                if who is not None:
                    stop.append(
                        OperationCancelled(
                            f"cancelled by {who} while it ran; {self._aftermath()}"
                        )
                    )
                    work.cancel()
                    return

    def _aftermath(self) -> str:
        """What stopping the work now leaves on the server, in words."""
        if not self.script_started:
            return (
                "its script had not started on the server, so nothing was changed there"
            )
        return (
            "the remote command was stopped, and the server may have been "
            "changed part-way: Retry checks it again"
        )

    def _cancel_requested_by(self) -> str | None:
        try:
            row = (
                Operation.objects.filter(
                    pk=self.operation_id, cancel_requested_at__isnull=False
                )
                .values_list("cancel_requested_by", flat=True)
                .first()
            )
        except DatabaseError:
            connections.close_all()
            return None  # the reaper ends it if the database stays away
        return row

    async def _work(self, operation: Operation) -> None:
        from brokeforge.packages.base import FACTS_SCRIPT, HostFacts, VerificationFailed
        from brokeforge.packages.registry import get_kind
        from brokeforge.servers.ssh import (
            CommandFailed,
            CommandTimedOut,
            HostKeyChanged,
            SSHSession,
        )

        kind = get_kind(operation.kind)
        action = Action(operation.action)
        server = await self._in_db(lambda: operation.server)
        target = server.ssh_target()
        started = time.monotonic()
        limit = operation.timeout_seconds

        def remaining() -> float:
            return max(limit - (time.monotonic() - started), 1.0)

        heartbeat = asyncio.create_task(self._heartbeat_loop())
        try:
            self._log(
                f"== {action} {operation.record_label}: connecting to "
                f"{target.address} as {target.user}\n"
            )
            async with SSHSession(
                target, connect_timeout=settings.BROKEFORGE_CONNECT_TIMEOUT
            ) as session:
                if not target.pinned_host_key:
                    await self._in_db(lambda: server.pin_host_key(session.host_key))
                    # Two first connections may race to pin: only the key
                    # that won may be trusted with the script.
                    if server.host_key != session.host_key:
                        raise HostKeyChanged(
                            f"host key changed while it was being pinned: "
                            f"{target.address} presented another key than "
                            f"{server.host_key_fingerprint}; nothing was run"
                        )
                    self._log(f"== pinned host key {server.host_key_fingerprint}\n")
                facts_result = await session.run(
                    FACTS_SCRIPT, timeout=min(FACTS_TIMEOUT, remaining())
                )
                facts = HostFacts.parse(facts_result.output)
                self._log(f"== host: {facts.pretty_name}\n")
                script = kind.script(action, facts, operation.params)
                # From here on the server may change.
                self.script_started = True
                try:
                    result = await session.run(
                        script, timeout=remaining(), on_output=self._on_output
                    )
                except CommandTimedOut as exc:
                    # The script gets what is left of the operation's limit.
                    raise CommandTimedOut(
                        f"timed out after {limit} s", output_tail=exc.output_tail
                    ) from None
                if result.exit_status != 0:
                    raise CommandFailed(
                        _summarize(result.stderr_tail, result.output)
                        + f" (exit status {result.exit_status})"
                    )
                self._log("== verifying on the host\n")
                verify = await session.run(
                    kind.verify_script(action, facts, operation.params),
                    timeout=min(VERIFY_TIMEOUT, remaining()),
                    on_output=self._on_output,
                )
                if verify.exit_status != 0:
                    raise VerificationFailed(
                        f"{action} ran, but the check on the host failed: "
                        + _summarize(verify.stderr_tail, verify.output)
                    )
                await self._in_db(lambda: kind.after_verify(operation, verify.output))
        finally:
            heartbeat.cancel()
            if self._flush_due is not None:
                # The end writes the output; a flush under way is waited for.
                self._flush_due.cancel()

    async def _in_db(self, work: Callable[[], T]) -> T:
        future = self._db.submit(work)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        return await asyncio.wrap_future(future)

    async def _on_output(self, text: str) -> None:
        """Keep the output; it is written at most once a `FLUSH_INTERVAL`,
        and at the latest about that long after it came."""
        self._log(text)
        if not self._own_db:
            _batch.add(self)  # with the other operations of this worker
            return
        # Outside a worker (an operation run in place, as the tests do with
        # `run_operation`) there are no shared database threads for the
        # batch, so the runner flushes by itself. Shortcoming: two ways to
        # write output; it ends when `_FlushBatch` can write from its own
        # thread's connection too and the runners here use it.
        if self._flush_due is None or self._flush_due.done():
            wait = FLUSH_INTERVAL - (time.monotonic() - self._last_flush)
            self._flush_due = asyncio.create_task(self._flush_after(wait))

    async def _flush_after(self, wait: float) -> None:
        if wait > 0:
            await asyncio.sleep(wait)
        await self._in_db(self._flush_quietly)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(workers.heartbeat_interval())
            if self._own_db:
                await self._in_db(self._flush_quietly)
            else:
                _batch.add(self)

    def _flush_quietly(self) -> None:
        """Flush while the remote work runs; a busy database must not end it."""
        try:
            self._flush()
        except DatabaseError as exc:
            self._last_flush = time.monotonic()
            logger.warning(
                "operation %s: could not save output yet: %s",
                self.operation_id,
                exc,
                extra={
                    "action": "output_flush_failed",
                    "operation_id": self.operation_id,
                },
            )
            connections.close_all()

    def _log(self, text: str) -> None:
        if len(text) > MAX_OUTPUT_CHARS:
            self.dropped += len(text) - MAX_OUTPUT_CHARS
            text = text[-MAX_OUTPUT_CHARS:]
        self.output.append(text)
        self.output_chars += len(text)
        while self.output_chars > MAX_OUTPUT_CHARS and len(self.output) > 1:
            gone = len(self.output.pop(0))
            self.output_chars -= gone
            self.dropped += gone

    def _flush(self) -> None:
        """Write the output so far and the heartbeat, if this worker still holds it."""
        self._last_flush = time.monotonic()
        Operation.objects.filter(
            pk=self.operation_id, state=OperationState.RUNNING, worker_id=self.worker
        ).update(
            output="".join(self.output),
            output_dropped=self.dropped,
            heartbeat_at=timezone.now(),
        )


class _FlushBatch:
    """The output and heartbeats of a worker's running operations, written
    together: one transaction every `FLUSH_INTERVAL` for all of them, not
    one per operation, so many operations at once do not queue on the
    database's write lock. Its thread starts with the first operation."""

    def __init__(self) -> None:
        self._due: set[OperationRunner] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, runner: OperationRunner) -> None:
        with self._lock:
            self._due.add(runner)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="bf-flush", daemon=True
                )
                self._thread.start()

    def discard(self, runner: OperationRunner) -> None:
        with self._lock:
            self._due.discard(runner)

    def _loop(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL)
            with self._lock:
                due, self._due = self._due, set()
            database = loop.db_executor()
            if due and database is not None:
                try:
                    database.submit(self._write, due).result()
                except DatabaseError as exc:
                    logger.warning(
                        "could not save the output of %s operation(s) yet: %s",
                        len(due),
                        exc,
                        extra={"action": "output_flush_failed"},
                    )
                    connections.close_all()
                    with self._lock:
                        self._due |= due  # the next pass tries again

    @staticmethod
    def _write(due: set[OperationRunner]) -> None:
        with transaction.atomic():
            for runner in due:
                try:
                    with transaction.atomic():
                        runner._flush()
                except (OperationalError, InterfaceError):
                    raise  # the database is away: the whole batch waits
                except DatabaseError:
                    # This operation's output only (text PostgreSQL refuses):
                    # its end tries again, and ends it whatever happens.
                    logger.exception(
                        "operation %s: output could not be saved",
                        runner.operation_id,
                        extra={
                            "action": "output_flush_failed",
                            "operation_id": runner.operation_id,
                        },
                    )


_batch = _FlushBatch()


def _summarize(stderr_tail: str, output: str) -> str:
    """The lines of a failed command a person most needs to read."""
    return "\n".join(
        line[:MAX_REASON_LINE] for line in _reason_lines(stderr_tail, output)
    )


def _reason_lines(stderr_tail: str, output: str) -> list[str]:
    lines = [
        line
        for line in stderr_tail.splitlines()
        if line.strip() and not line.startswith(NOISE_PREFIXES)
    ]
    apt_errors = [line for line in lines if line.startswith("E: ")]
    if apt_errors:
        return [*_lock_holder(output), *apt_errors[-3:]]
    if lines:
        return lines[-2:]
    tail = [line for line in output.splitlines() if line.strip()]
    return tail[-3:] or ["the command failed without output"]


def _lock_holder(output: str) -> list[str]:
    """apt's last word on who holds the lock it waited for, if it waited."""
    waits = [line for line in output.splitlines() if "Could not get lock" in line]
    if not waits:
        return []
    line = waits[-1].removeprefix("Waiting for cache lock: ").rstrip(". ")
    return [line]


def start_watchdog_thread() -> threading.Thread:
    """Watch this worker's operations from outside their code.

    The runner's own timeouts end an operation on time; this is for when
    they cannot. An operation past its deadline plus `WATCHDOG_GRACE_SECONDS`
    is failed here and its work is cancelled, which kills the remote
    command. If it still holds its thread a grace later (code stuck outside
    the event loop), or the shared event loop itself stopped answering, the
    process is not to be trusted: it takes no new work and ends itself once
    its healthy operations are done (at once when there are none);
    `brokeforge serve` starts a new one, and the reaper writes any failure
    the database did not take.
    """

    def loop_once() -> None:
        now = time.monotonic()
        with _running_lock:
            runners = list(_running.values())
        stuck_loop = loop.stalled_for() >= WATCHDOG_GRACE_SECONDS
        for runner in runners:
            overdue = now - runner.deadline
            if runner.abandoned_at is None and (
                overdue >= WATCHDOG_GRACE_SECONDS or (stuck_loop and overdue > 0)
            ):
                runner.abandoned_at = now
                _watchdog_fail(runner, overdue)
        abandoned = [
            r
            for r in runners
            if r.abandoned_at is not None
            and (now - r.abandoned_at >= WATCHDOG_GRACE_SECONDS or stuck_loop)
        ]
        if not abandoned:
            return
        DRAIN.set()
        if len(abandoned) < len(runners) and not stuck_loop:
            return  # healthy operations finish first; no new work meanwhile
        operation = abandoned[0].operation
        logger.error(
            "operation %s is stuck in this worker past its deadline; ending "
            "this worker",
            operation.pk if operation else None,
            extra={
                "action": "watchdog_kill",
                "operation_id": operation.pk if operation else None,
            },
        )
        os.kill(os.getpid(), signal.SIGKILL)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                loop_once()
            except Exception:
                # The watchdog must outlive its own mistakes.
                logger.exception(
                    "watchdog pass failed", extra={"action": "watchdog_error"}
                )

    thread = threading.Thread(target=watch, name="bf-watchdog", daemon=True)
    thread.start()
    return thread


def _watchdog_fail(runner: OperationRunner, overdue: float) -> None:
    """Fail an overdue operation and stop its work (it kills the remote
    command when the event loop still answers)."""
    operation = runner.operation
    if operation is None:
        return
    message = (
        f"timed out after {operation.timeout_seconds} s: the worker was stuck "
        "past its deadline and the watchdog ended the operation"
    )
    logger.error(
        "operation %s outlived its deadline by %.0f s; the watchdog fails it",
        operation.pk,
        overdue,
        extra={"action": "watchdog_fail", "operation_id": operation.pk},
    )
    runner.stop_reason = StuckPastDeadline(message)
    # If the database does not answer, the reaper writes it later.
    try:
        machine.fail(operation, message, "timed_out", worker_id=runner.worker)
    except DatabaseError:
        connections.close_all()
