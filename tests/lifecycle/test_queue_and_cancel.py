"""The per-server queue, cancel, fencing, lost dispatch and honest waiting.

These run the real runner against the scripted SSH server (a hang, a
failure on demand); the real Debian host proves the same in tests/faults.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from brokeforge.lifecycle import machine, runner, workers
from brokeforge.lifecycle.errors import ActionRefused
from brokeforge.lifecycle.models import (
    Operation,
    OperationState,
    RecordStatus,
    Worker,
)
from brokeforge.lifecycle.reaper import reap
from brokeforge.lifecycle.waiting import waiting_reason
from brokeforge.packages.models import Database
from brokeforge.packages.service import request_action
from brokeforge.servers.models import Server
from tests.conftest import TEST_WORKER, run_now
from tests.lifecycle.test_runner import DEBIAN_12, FACTS, VERIFY
from tests.testhosts.fixtures import ScriptedSSHTestServer

pytestmark = pytest.mark.django_db(transaction=True)

PGID_LINE = "__brokeforge_pgid=4242\n"


@pytest.fixture
def server(
    make_server: Callable[..., Server], scripted_ssh: ScriptedSSHTestServer
) -> Server:
    key = scripted_ssh.client_key.export_private_key().decode()
    scripted_ssh.add_rule(FACTS, stdout=DEBIAN_12)
    return make_server("s1", port=scripted_ssh.port, private_key=key)


@pytest.fixture
def alice(user: User) -> User:
    """Alice, who owns the servers `make_server` makes (tests/conftest.py)."""
    return user


def status(server: Server, kind: str) -> Database:
    return Database.objects.get(server=server, kind=kind)


def run_in_thread(operation: Operation) -> threading.Thread:
    def run() -> None:
        try:
            runner.OperationRunner(operation.pk, TEST_WORKER).run()
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def is_running(operation: Operation) -> bool:
    operation.refresh_from_db()
    return operation.state == OperationState.RUNNING


# -- the per-server queue (F15) -------------------------------------------------


def test_package_operations_on_one_server_wait_for_each_other_in_order(
    server: Server, scripted_ssh: ScriptedSSHTestServer, make_server
):
    first = request_action(server, "redis", "install")
    second = request_action(server, "mariadb", "install")
    elsewhere = request_action(make_server("s2"), "redis", "install")

    assert first.task_id and second.task_id == "" and elsewhere.task_id
    assert waiting_reason(second) == (
        f"queued behind install of Redis on s1 (#{first.pk}), which is queued"
    )
    # A stray task for the second one does not jump the queue.
    assert machine.claim(second.pk, TEST_WORKER) is None

    scripted_ssh.add_rule(VERIFY, stdout="7.0.15\n")
    scripted_ssh.add_rule(".")
    assert run_now(first).state == OperationState.SUCCEEDED

    second.refresh_from_db()
    assert second.task_id and second.ready_at is not None
    assert run_now(second).state == OperationState.SUCCEEDED
    assert status(server, "mariadb").status == RecordStatus.ACTIVE


def test_a_failed_operation_lets_the_next_one_run(
    server: Server, scripted_ssh: ScriptedSSHTestServer
):
    first = request_action(server, "redis", "install")
    second = request_action(server, "mariadb", "install")
    scripted_ssh.add_rule(
        "redis", stderr="E: Unable to locate package\n", exit_status=100
    )

    assert run_now(first).state == OperationState.FAILED

    second.refresh_from_db()
    assert second.task_id
    assert waiting_reason(second) == (
        "waiting for a worker — none is running (start `brokeforge serve`)"
    )


# -- cancel ------------------------------------------------------------------------


def test_cancelling_a_queued_operation_fails_the_record_and_frees_the_queue(
    server: Server, alice: User
):
    first = request_action(server, "redis", "install")
    second = request_action(server, "mariadb", "install")

    cancelled = machine.cancel(first, user=alice)

    assert cancelled.state == OperationState.CANCELLED
    record = status(server, "redis")
    assert record.status == RecordStatus.FAILED
    assert record.error_message == (
        "cancelled by alice before it started; nothing was changed on the server"
    )
    second.refresh_from_db()
    assert second.task_id, "the next operation on the server was dispatched"
    # Retry works from there.
    retried = request_action(server, "redis", "retry")
    assert retried.attempt == 2 and status(server, "redis").error_message == ""


def test_cancelling_a_running_operation_kills_the_remote_command(
    server: Server, scripted_ssh: ScriptedSSHTestServer, alice: User
):
    scripted_ssh.add_rule("bf_apt", stderr=PGID_LINE, hang=True)
    scripted_ssh.add_rule("kill ")
    operation = request_action(server, "redis", "install")
    worker = run_in_thread(operation)
    wait_until(lambda: is_running(operation))
    scripted_ssh.wait_for_command("bf_apt")

    asked = time.monotonic()
    machine.cancel(operation, user=alice)
    worker.join(10)

    assert not worker.is_alive()
    assert time.monotonic() - asked < 5
    operation.refresh_from_db()
    assert operation.state == OperationState.CANCELLED
    assert operation.reason_class == "cancelled"
    record = status(server, "redis")
    assert record.status == RecordStatus.FAILED
    assert record.error_message.startswith(
        "cancelled by alice while it ran; the remote command was stopped"
    )
    assert any("kill -TERM -- -4242" in c for c in scripted_ssh.commands)
    with pytest.raises(ActionRefused, match="already ended"):
        machine.cancel(operation, user=alice)


def test_a_cancel_while_connecting_says_nothing_was_changed(
    make_server: Callable[..., Server], alice: User
):
    """A server that accepts the connection and never speaks: the cancel
    comes before any script could start."""
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        server = make_server("mute", port=mute.getsockname()[1])
        operation = request_action(server, "redis", "install")
        worker = run_in_thread(operation)
        wait_until(lambda: is_running(operation))
        machine.cancel(operation, user=alice)
        worker.join(10)

    assert not worker.is_alive()
    operation.refresh_from_db()
    assert operation.state == OperationState.CANCELLED
    assert status(server, "redis").error_message == (
        "cancelled by alice while it ran; its script had not started on the "
        "server, so nothing was changed there"
    )


def test_the_reaper_ends_a_cancel_the_worker_ignores(server: Server, alice: User):
    operation = request_action(server, "redis", "install")
    assert machine.claim(operation.pk, "deaf-worker") is not None
    machine.cancel(operation, user=alice)
    Operation.objects.filter(pk=operation.pk).update(
        cancel_requested_at=timezone.now() - timedelta(seconds=11)
    )

    assert reap() == 1

    operation.refresh_from_db()
    assert operation.state == OperationState.CANCELLED
    assert status(server, "redis").error_message.startswith(
        "cancelled by alice; its worker (deaf-worker) did not stop it within 10 s"
    )


# -- fencing (F11) -----------------------------------------------------------------


def test_a_late_result_changes_nothing_and_is_kept_in_the_log(server: Server):
    operation = request_action(server, "redis", "install")
    claimed = machine.claim(operation.pk, "slow-worker")
    assert claimed is not None
    Operation.objects.filter(pk=operation.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=30)
    )
    assert reap() == 1

    assert machine.succeed(claimed, "slow-worker") is False

    operation.refresh_from_db()
    assert operation.state == OperationState.FAILED
    assert status(server, "redis").status == RecordStatus.FAILED
    assert "late result from worker slow-worker ignored: succeeded" in operation.output
    assert operation.events.filter(status=RecordStatus.ACTIVE).count() == 0


# -- lost dispatch -----------------------------------------------------------------


def test_an_operation_whose_task_was_deleted_is_dispatched_again(server: Server):
    operation = request_action(server, "redis", "install")
    DBTaskResult.objects.filter(id=operation.task_id).delete()

    reap()

    operation.refresh_from_db()
    assert operation.task_id and DBTaskResult.objects.filter(id=operation.task_id)
    assert operation.state == OperationState.QUEUED


def test_an_operation_whose_task_ended_or_died_unclaimed_is_dispatched_again(
    make_server: Callable[..., Server],
) -> None:
    """A task that ended without claiming its operation (a stopping worker
    takes no new work), or was taken by a worker that died before the
    claim, leaves the operation queued: the reaper dispatches it again. A
    task that is simply waiting for a worker is left alone."""
    from django_tasks.base import TaskResultStatus

    ops = [
        request_action(make_server(f"queue-{i}"), "redis", "install") for i in range(3)
    ]
    ended, died, waiting = ops
    DBTaskResult.objects.filter(id=ended.task_id).update(
        status=TaskResultStatus.SUCCESSFUL, finished_at=timezone.now()
    )
    long_ago = timezone.now() - timedelta(seconds=workers.lease_seconds() + 5)
    DBTaskResult.objects.filter(id=died.task_id).update(
        status=TaskResultStatus.RUNNING, started_at=long_ago
    )

    reap()

    for operation in ops:
        before = operation.task_id
        operation.refresh_from_db()
        assert operation.state == OperationState.QUEUED
        task = DBTaskResult.objects.get(id=operation.task_id)
        assert task.status == TaskResultStatus.READY
        assert (operation.task_id != before) == (operation is not waiting)


def test_an_operation_no_worker_takes_fails_saying_so(server: Server, settings):
    settings.BROKEFORGE_QUEUE_TIMEOUT = 60
    operation = request_action(server, "redis", "install")
    Operation.objects.filter(pk=operation.pk).update(
        ready_at=timezone.now() - timedelta(seconds=61)
    )

    assert reap() == 1

    record = status(server, "redis")
    assert record.status == RecordStatus.FAILED
    assert record.error_message == (
        "no worker picked it up within 60 s (no worker is running: start "
        "`brokeforge serve`); nothing was changed on the server"
    )


# -- the worker registry (F12) -----------------------------------------------------


def test_a_new_worker_fails_what_its_dead_predecessor_held(server: Server):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    Worker.objects.create(
        id="old-life",
        hostname=__import__("socket").gethostname(),
        pid=dead.pid,
        process_start="gone",
        heartbeat_at=timezone.now(),
    )
    workers.register("sibling")  # this very process: alive, left alone
    operation = request_action(server, "redis", "install")
    assert machine.claim(operation.pk, "old-life") is not None

    assert workers.end_previous_lives("new-life") == 1

    record = status(server, "redis")
    assert record.error_message.startswith(
        f"worker lost: its process (pid {dead.pid} on "
    )
    assert Worker.objects.get(id="old-life").stopped_at is not None
    assert Worker.objects.get(id="sibling").stopped_at is None
    assert workers.live().filter(id="sibling").exists()


def test_waiting_reason_names_a_free_worker_or_the_package_lock(server: Server):
    operation = request_action(server, "redis", "install")
    workers.register("w1")
    assert waiting_reason(operation) == "waiting for a free worker"

    claimed = machine.claim(operation.pk, "w1")
    assert claimed is not None
    Operation.objects.filter(pk=operation.pk).update(
        output="Waiting for cache lock: Could not get lock "
        "/var/lib/dpkg/lock-frontend. It is held by process 77 (unattended-upgr)...\n"
    )
    claimed.refresh_from_db()
    assert waiting_reason(claimed) == (
        "waiting for the package manager lock: Could not get lock "
        "/var/lib/dpkg/lock-frontend. It is held by process 77 (unattended-upgr)"
    )


# -- graceful shutdown (F09) -------------------------------------------------------


@pytest.fixture
def shutdown(settings) -> Iterator[None]:
    settings.BROKEFORGE_SHUTDOWN_GRACE = 1
    yield
    runner.SHUTDOWN.clear()


def test_a_stopping_worker_ends_its_operation_after_the_grace(
    server: Server, scripted_ssh: ScriptedSSHTestServer, shutdown: None
):
    scripted_ssh.add_rule("bf_apt", stderr=PGID_LINE, hang=True)
    scripted_ssh.add_rule("kill ")
    operation = request_action(server, "redis", "install")
    worker = run_in_thread(operation)
    scripted_ssh.wait_for_command("bf_apt")

    runner.SHUTDOWN.set()
    worker.join(10)

    assert not worker.is_alive()
    operation.refresh_from_db()
    assert operation.reason_class == "worker_shutdown"
    assert status(server, "redis").error_message.startswith(
        "interrupted by a worker shutdown"
    )
    assert any("kill -TERM -- -4242" in c for c in scripted_ssh.commands)
    # And it takes no new work.
    other = request_action(server, "mariadb", "install")
    assert run_now(other).state == OperationState.QUEUED
