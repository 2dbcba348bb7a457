"""The fault-injection suite: issue 3's scenarios against a real BrokeForge.

Each scenario starts real BrokeForge processes (`brokeforge serve` or bare
workers) on the test database, runs operations on the real Debian test host
(or the scripted SSH server where only it can produce the fault), injects
one fault, then checks the invariants (see `harness.check_after`): no record
in a transitional status, one terminal transition per operation, a reason of
the right class, nothing BrokeForge started still running on the host. Each
repeats BROKEFORGE_FAULT_REPEAT times (2 in CI); scripts/bench-reliability
runs them 20 times on SQLite and on PostgreSQL and prints the figures.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import OperationalError, connection, transaction
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from brokeforge.lifecycle import machine, runner, spool
from brokeforge.lifecycle.errors import ActionRefused
from brokeforge.lifecycle.models import Event, Operation, OperationState, Worker
from brokeforge.lifecycle.reaper import reap
from brokeforge.lifecycle.waiting import waiting_reason
from brokeforge.packages.models import Database
from brokeforge.packages.service import request_action
from brokeforge.servers.models import Server
from tests.conftest import run_now
from tests.faults.harness import (
    REPEAT,
    Fleet,
    check_after,
    free_port,
    now,
    record,
    seconds_since,
    wait_for,
    wait_no_leftovers,
    wait_running,
    wait_terminal,
)
from tests.faults.probe import PROBE_LOG
from tests.lifecycle.test_runner import DEBIAN_12, FACTS
from tests.testhosts.debian_host import pids_rooted_at
from tests.testhosts.fixtures import DebianTestHost, ScriptedSSHTestServer

pytestmark = [
    pytest.mark.debian_host,
    pytest.mark.timeout(900),
    pytest.mark.django_db(transaction=True),
]


def probe(
    server: Server, seconds: float, tag: str = "p", kind: str = "probe"
) -> Operation:
    """Ask for a probe install: a real script that runs `seconds` on the host."""
    return request_action(
        server, kind, "install", params={"seconds": seconds, "tag": tag}
    )


def probe_with_timeout(
    server: Server, seconds: float, timeout: int, tag: str
) -> Operation:
    """A probe whose operation may run only `timeout` seconds.

    Both happen in one transaction, so no worker sees the operation before
    its limit is set.
    """
    with transaction.atomic():
        operation = probe(server, seconds, tag)
        Operation.objects.filter(pk=operation.pk).update(timeout_seconds=timeout)
    return operation


def reset(server: Server) -> None:
    """Forget the previous run's records, so the next run starts clean."""
    Database.objects.filter(server=server).delete()


def probe_log(host: DebianTestHost) -> list[tuple[str, str, float]]:
    path = host.root / PROBE_LOG.lstrip("/")
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        event, tag, moment = line.split()
        entries.append((event, tag, float(moment)))
    return entries


# 1. A worker killed at a random moment -----------------------------------------


def test_worker_sigkill_at_a_random_moment(
    fleet: Fleet, host: DebianTestHost, host_server: Server
):
    """F07: the supervisor fails it at once, naming the signal; nothing re-runs."""
    fleet.serve(workers=1)
    for run in range(REPEAT):
        reset(host_server)
        operation = wait_running(probe(host_server, 60, tag=f"kill{run}"))
        time.sleep(random.uniform(0, 1.5))
        killed_at = now()
        os.kill(fleet.worker_pid(operation.worker_id), signal.SIGKILL)

        wait_terminal(operation, timeout=30)
        check_after([operation], ["worker_lost"])
        assert "killed by signal 9 (SIGKILL)" in operation.error_message
        left = wait_no_leftovers(host.root)
        record(
            "1a worker SIGKILL, supervisor alive",
            seconds_to_failed=seconds_since(killed_at, operation),
            orphans=len(left),
        )
        assert not left
        assert (
            len([e for e in probe_log(host) if e[:2] == ("start", f"kill{run}")]) == 1
        )
        fleet.wait_for_workers(1)  # the supervisor started a new one


def test_every_process_killed_then_the_next_start_reaps(
    fleet: Fleet, host: DebianTestHost, host_server: Server
):
    """F08: supervisor and worker die together; the next worker start ends it."""
    for run in range(REPEAT):
        reset(host_server)
        fleet.serve(workers=1)
        operation = wait_running(probe(host_server, 60, tag=f"all{run}"))
        killed_at = now()
        fleet.kill_all()

        fleet.worker()  # the next start, on the same host
        wait_terminal(operation, timeout=30)
        check_after([operation], ["worker_lost"])
        assert "found when a new worker started" in operation.error_message
        left = wait_no_leftovers(host.root)
        record(
            "1b every process SIGKILLed, next start reaps",
            seconds_to_failed=seconds_since(killed_at, operation),
            orphans=len(left),
        )
        assert not left
        fleet.kill_all()


def test_every_process_killed_and_a_reaper_elsewhere_ends_it(
    transactional_db: None,
    host: DebianTestHost,
    host_server: Server,
    tmp_path: Path,
    settings,
):
    """F08: nothing restarts here; a reaper on another machine (this test
    process) ends the operation once its lease lapses."""
    settings.BROKEFORGE_LEASE_SECONDS = 3
    fleet = Fleet(tmp_path, BROKEFORGE_LEASE_SECONDS="3")
    try:
        for run in range(REPEAT):
            reset(host_server)
            fleet.worker()
            operation = wait_running(probe(host_server, 60, tag=f"lease{run}"))
            killed_at = now()
            fleet.kill_all()

            def reaped(operation: Operation = operation) -> bool:
                reap()
                operation.refresh_from_db()
                return operation.state == OperationState.FAILED

            wait_for(reaped, 30, "a reaper to end the operation")
            check_after([operation], ["worker_lost"])
            assert operation.error_message.startswith("worker lost: no heartbeat")
            left = wait_no_leftovers(host.root)
            record(
                "1c every process SIGKILLed, reaper elsewhere (lease 3 s)",
                seconds_to_failed=seconds_since(killed_at, operation),
                orphans=len(left),
            )
            assert not left
    finally:
        fleet.stop()


# 2. SIGTERM mid-operation ------------------------------------------------------


def test_worker_sigterm_mid_operation(
    fleet: Fleet, host: DebianTestHost, host_server: Server
):
    """F09: the worker takes no new work, gives the operation its grace (2 s
    here), then fails it as interrupted and exits; serve starts a new one."""
    serve = fleet.serve(workers=1)
    for run in range(REPEAT):
        reset(host_server)
        operation = wait_running(probe(host_server, 60, tag=f"term{run}"))
        stopped_at = now()
        if run % 2 == 0:
            os.kill(fleet.worker_pid(operation.worker_id), signal.SIGTERM)
        else:
            os.kill(serve.pid, signal.SIGTERM)  # BrokeForge itself is stopped

        wait_terminal(operation, timeout=30)
        check_after([operation], ["worker_shutdown"])
        assert operation.error_message.startswith("interrupted by a worker shutdown")
        left = wait_no_leftovers(host.root)
        record(
            "2 SIGTERM mid-operation (grace 2 s)",
            seconds_to_failed=seconds_since(stopped_at, operation),
            orphans=len(left),
        )
        assert not left
        if run % 2 == 0:
            fleet.wait_for_workers(1)
        else:
            serve.wait(30)
            fleet.processes.clear()
            serve = fleet.serve(workers=1)


# 3. Timeouts -------------------------------------------------------------------


def test_an_operation_that_outlives_its_timeout(
    fleet: Fleet, host: DebianTestHost, host_server: Server
):
    """F01: the remote command hangs; it fails at its limit, the command is gone."""
    fleet.serve(workers=1)
    for run in range(REPEAT):
        reset(host_server)
        operation = wait_terminal(
            probe_with_timeout(host_server, 60, timeout=4, tag=f"slow{run}")
        )
        check_after([operation], ["timed_out"])
        assert operation.error_message == "timed out after 4 s"
        assert operation.started_at is not None and operation.finished_at is not None
        overrun = (operation.finished_at - operation.started_at).total_seconds() - 4
        left = wait_no_leftovers(host.root, timeout=3)
        record(
            "3a remote command hangs (limit 4 s)",
            seconds_past_limit=overrun,
            orphans=len(left),
        )
        assert not left


def test_an_operation_whose_server_falls_silent(
    fleet: Fleet, scripted_ssh: ScriptedSSHTestServer, make_server
):
    """F02: the SSH read blocks with the server silent; ended at the limit."""
    key = scripted_ssh.client_key.export_private_key().decode()
    server = make_server("quiet", port=scripted_ssh.port, private_key=key)
    scripted_ssh.add_rule(FACTS, stdout=DEBIAN_12)
    scripted_ssh.add_rule("probe", stdout="probe q running\n", hang=True)
    fleet.serve(workers=1)
    for run in range(REPEAT):
        reset(server)
        operation = probe_with_timeout(server, 60, timeout=4, tag=f"quiet{run}")
        wait_running(operation)
        scripted_ssh.silent()
        wait_terminal(operation)
        check_after([operation], ["timed_out"])
        assert operation.error_message == "timed out after 4 s"
        overrun = (operation.finished_at - operation.started_at).total_seconds() - 4
        record(
            "3b server falls silent (limit 4 s)", seconds_past_limit=overrun, orphans=0
        )
        scripted_ssh.silent(False)


# 4. The SSH side ----------------------------------------------------------------


def _kill_ssh_sessions(root: Path, listener: int | None) -> int:
    """Kill the per-connection sshd processes in the host: the link drops."""
    killed = 0
    for pid in pids_rooted_at(root):
        if pid == listener:
            continue
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if command.startswith(b"sshd"):
            os.kill(pid, signal.SIGKILL)
            killed += 1
    return killed


def test_ssh_dropped_mid_command(
    fleet: Fleet, host: DebianTestHost, host_server: Server
):
    """F14: the session dies under a running script: "lost SSH connection",
    and the dead-man's switch ends the script on the host."""
    fleet.serve(workers=1)
    for run in range(REPEAT):
        reset(host_server)
        operation = wait_running(probe(host_server, 60, tag=f"drop{run}"))
        dropped_at = now()
        assert _kill_ssh_sessions(host.root, host.sshd_pid) > 0

        wait_terminal(operation, timeout=30)
        check_after([operation], ["connection_lost"])
        assert operation.error_message.startswith("lost SSH connection to s1")
        left = wait_no_leftovers(host.root)
        record(
            "4a SSH dropped mid-command",
            seconds_to_failed=seconds_since(dropped_at, operation),
            orphans=len(left),
        )
        assert not left


def test_unreachable_refused_and_changed_hosts_each_say_so(
    transactional_db: None,
    host: DebianTestHost,
    host_server: Server,
    scripted_ssh: ScriptedSSHTestServer,
    make_server: Callable[..., Server],
):
    """Connection refused, authentication refused, host key changed: each
    its own reason, nothing run, nothing left."""
    key = scripted_ssh.client_key.export_private_key().decode()
    closed = make_server("closed", port=free_port())
    refusing = make_server("refusing", port=scripted_ssh.port, private_key=key)
    scripted_ssh.refuse_auth = True
    for run in range(REPEAT):
        for server in (closed, refusing, host_server):
            reset(server)
        assert run_now(probe(host_server, 0, tag=f"pin{run}")).state == "succeeded"
        reset(host_server)
        host.new_host_key()
        operations = [
            run_now(probe(closed, 0)),
            run_now(probe(refusing, 0)),
            run_now(probe(host_server, 0, tag=f"changed{run}")),
        ]
        check_after(operations, ["connect_failed", "auth_refused", "host_key_changed"])
        assert "connection refused" in operations[0].error_message
        assert [e for e in probe_log(host) if e[1] == f"changed{run}"] == []
        for operation, name in zip(
            operations, ("closed", "auth", "hostkey"), strict=True
        ):
            record(f"4b {name}", seconds_to_failed=_duration(operation), orphans=0)
        host_server.refresh_from_db()
        from brokeforge.servers.service import check_server

        check_server(host_server, repin=True)


def _duration(operation: Operation) -> float:
    assert operation.started_at and operation.finished_at
    return (operation.finished_at - operation.started_at).total_seconds()


# 5. The database away when the result is written --------------------------------


@pytest.fixture
def database_away() -> Callable[[float], threading.Thread]:
    """Make the database refuse BrokeForge's writes for a while."""
    held: list[threading.Thread] = []

    def away(seconds: float) -> threading.Thread:
        if connection.vendor == "sqlite":
            # An exclusive lock: every other connection's write fails with
            # "database is locked" after its busy timeout.
            blocker = sqlite3.connect(
                connection.settings_dict["NAME"], timeout=30, check_same_thread=False
            )
            blocker.execute("BEGIN EXCLUSIVE")

            def release() -> None:
                time.sleep(seconds)
                blocker.rollback()
                blocker.close()

        else:
            # New connections refused and current ones cut, as while
            # PostgreSQL restarts; this test's own connection stays.
            import psycopg

            sd = connection.settings_dict
            name = sd["NAME"]
            admin = psycopg.connect(
                dbname="postgres",
                user=sd["USER"],
                password=sd.get("PASSWORD") or None,
                host=sd.get("HOST") or sd.get("OPTIONS", {}).get("host"),
                autocommit=True,
            )
            ours = connection.cursor().connection.info.backend_pid
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> %s",
                [name, ours],
            )

            def release() -> None:
                time.sleep(seconds)
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
                admin.close()

        thread = threading.Thread(target=release)
        held.append(thread)
        return thread

    yield away
    for thread in held:
        thread.join()


def test_database_away_when_the_result_is_written(
    host: DebianTestHost,
    host_server: Server,
    tmp_path: Path,
    database_away: Callable[[float], threading.Thread],
):
    """F10: the result write retries on fresh connections until it lands."""
    fleet = Fleet(tmp_path, BROKEFORGE_SQLITE_BUSY_TIMEOUT="1")
    try:
        fleet.worker()
        for run in range(REPEAT):
            reset(host_server)
            operation = wait_running(
                request_action(
                    host_server,
                    "probe",
                    "install",
                    params={"seconds": 2, "tag": f"db{run}", "fail": True},
                )
            )
            release = database_away(6)
            away_at = now()
            release.start()
            release.join()
            back_at = now()
            wait_terminal(operation, timeout=60)
            check_after([operation], ["command_failed"])
            assert "probe failed as asked" in operation.error_message
            record(
                "5 database away 6 s at the result write",
                seconds_to_failed=seconds_since(away_at, operation),
                seconds_after_return=seconds_since(back_at, operation),
                orphans=len(wait_no_leftovers(host.root)),
            )
    finally:
        fleet.stop()


def test_a_result_the_database_never_took_is_replayed_from_disk(
    transactional_db: None, host: DebianTestHost, host_server: Server, monkeypatch
):
    """F10, the long outage: the worker keeps the result on disk; the next
    reaper pass writes it, original reason intact."""
    monkeypatch.setattr(runner, "DB_RETRY_DELAYS", (0.01, 0.01))
    real_fail = machine.fail

    def database_gone(*args: object, **kwargs: object) -> bool:
        raise OperationalError("the database system is shutting down")

    operation = request_action(
        host_server,
        "probe",
        "install",
        params={"seconds": 0, "tag": "spool", "fail": True},
    )
    monkeypatch.setattr(machine, "fail", database_gone)
    operation = run_now(operation)
    assert operation.state == OperationState.RUNNING  # nothing could be written
    assert list(spool.spool_dir().glob("operation-*.json"))

    monkeypatch.setattr(machine, "fail", real_fail)
    reap()

    operation.refresh_from_db()
    check_after([operation], ["command_failed"])
    assert "probe failed as asked" in operation.error_message
    assert not list(spool.spool_dir().glob("operation-*.json"))


# 6. Lost dispatch ------------------------------------------------------------------


def test_a_deleted_task_is_dispatched_again(
    fleet: Fleet, host: DebianTestHost, host_server: Server
):
    fleet.serve(workers=1)
    for run in range(REPEAT):
        reset(host_server)
        with transaction.atomic():
            operation = probe(host_server, 0, tag=f"lost{run}")
            DBTaskResult.objects.filter(id=operation.task_id).delete()
        lost_at = now()
        wait_terminal(operation, timeout=30)
        check_after([operation])
        assert operation.state == OperationState.SUCCEEDED
        record(
            "6a task row deleted after enqueue",
            seconds_to_done=seconds_since(lost_at, operation),
            orphans=0,
        )


def test_with_no_worker_the_wait_is_named_then_failed(
    transactional_db: None, host_server: Server, settings
):
    settings.BROKEFORGE_QUEUE_TIMEOUT = 1
    for run in range(REPEAT):
        reset(host_server)
        operation = probe(host_server, 0, tag=f"none{run}")
        assert waiting_reason(operation).startswith(
            "waiting for a worker — none is running"
        )
        time.sleep(1.1)
        reap()
        operation.refresh_from_db()
        check_after([operation], ["not_dispatched"])
        assert "no worker is running" in operation.error_message
        assert operation.ready_at and operation.finished_at
        record(
            "6b no worker at all (queue limit 1 s)",
            seconds_to_failed=(
                operation.finished_at - operation.ready_at
            ).total_seconds(),
            orphans=0,
        )


# 7. Requests at once ----------------------------------------------------------------


def _at_once(*calls: Callable[[], object]) -> list[object]:
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(index: int, call: Callable[[], object]) -> None:
        barrier.wait()
        try:
            results[index] = call()
        except ActionRefused as exc:
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_the_same_record_requested_twice_at_once(
    transactional_db: None, host_server: Server
):
    for run in range(REPEAT):
        reset(host_server)
        tag = f"twice{run}"
        results = _at_once(
            lambda tag=tag: probe(host_server, 0, tag=tag),
            lambda tag=tag: probe(host_server, 0, tag=tag),
        )
        refused = [r for r in results if isinstance(r, ActionRefused)]
        assert len(refused) == 1, results
        assert Operation.objects.filter(server=host_server, state="queued").count() == 1
        Operation.objects.filter(server=host_server, state="queued").update(
            state="cancelled"
        )
        record("7a same record twice at once", refused=len(refused), stuck=0)


def test_two_records_on_one_server_run_one_after_the_other(
    fleet: Fleet, host: DebianTestHost, host_server: Server
):
    """F15: two package operations at once on one server never overlap."""
    fleet.serve(workers=2)
    for run in range(REPEAT):
        reset(host_server)
        a, b = f"a{run}", f"b{run}"
        first, second = _at_once(
            lambda a=a: probe(host_server, 2, tag=a),
            lambda b=b: probe(host_server, 2, tag=b, kind="probe2"),
        )
        assert isinstance(first, Operation) and isinstance(second, Operation)
        for operation in (first, second):
            wait_terminal(operation, timeout=60)
        check_after([first, second])
        assert first.state == second.state == OperationState.SUCCEEDED
        times = {
            (e, t): m for e, t, m in probe_log(host) if t in (f"a{run}", f"b{run}")
        }
        spans = sorted(
            (times[("start", t)], times[("end", t)]) for t in (f"a{run}", f"b{run}")
        )
        gap = spans[1][0] - spans[0][1]
        record(
            "7b two records, one server, at once", overlap_seconds=max(-gap, 0), stuck=0
        )
        assert gap >= 0, f"the two scripts overlapped on the host: {spans}"


# 8. A record deleted mid-operation ---------------------------------------------------


def test_a_record_deleted_while_its_operation_runs(
    fleet: Fleet, host: DebianTestHost, host_server: Server
):
    fleet.serve(workers=1)
    for run in range(REPEAT):
        reset(host_server)
        operation = wait_running(probe(host_server, 2, tag=f"del{run}"))
        Database.objects.filter(server=host_server).delete()
        wait_terminal(operation, timeout=30)
        check_after([operation])
        assert operation.state == OperationState.SUCCEEDED
        record(
            "8 record deleted mid-operation",
            stuck=0,
            orphans=len(wait_no_leftovers(host.root)),
        )


# 9. Reaper races -------------------------------------------------------------------


def test_the_reaper_racing_a_slow_but_alive_worker(
    fleet: Fleet, host: DebianTestHost, host_server: Server
):
    """F11: one terminal transition; the late success is logged, not applied."""
    fleet.serve(workers=1)
    for run in range(REPEAT):
        reset(host_server)
        operation = wait_running(probe(host_server, 2, tag=f"race{run}"))
        Operation.objects.filter(pk=operation.pk).update(
            heartbeat_at=timezone.now() - timedelta(seconds=60)
        )
        reap()

        def late_result_logged(operation: Operation = operation) -> bool:
            operation.refresh_from_db()
            return "late result" in operation.output

        wait_for(late_result_logged, 30, "the worker's late result")
        check_after([operation], ["worker_lost"])
        record_status = Database.objects.get(server=host_server).status
        assert record_status == "failed"
        statuses = list(
            Event.objects.filter(operation=operation).values_list("status", flat=True)
        )
        assert statuses.count("failed") == 1 and "active" not in statuses
        record("9a reaper vs slow worker", terminal_events=1, stuck=0)


def test_a_long_healthy_operation_is_never_reaped(
    host: DebianTestHost, host_server: Server, tmp_path: Path, settings
):
    """F03: longer than the lease, heartbeating: one attempt, never reaped."""
    settings.BROKEFORGE_LEASE_SECONDS = 3
    fleet = Fleet(tmp_path, BROKEFORGE_LEASE_SECONDS="3")
    try:
        fleet.worker()
        for run in range(REPEAT):
            reset(host_server)
            operation = probe(host_server, 8, tag=f"long{run}")
            deadline = time.monotonic() + 60
            while not operation.is_finished and time.monotonic() < deadline:
                reap()  # a reaper elsewhere, far more eager than the real one
                time.sleep(0.5)
                operation.refresh_from_db()
            check_after([operation])
            assert operation.state == OperationState.SUCCEEDED
            starts = [e for e in probe_log(host) if e[:2] == ("start", f"long{run}")]
            assert len(starts) == 1
            record(
                "9b long healthy operation (8 s, lease 3 s)",
                attempts=len(starts),
                stuck=0,
            )
    finally:
        fleet.stop()


# The field cases that need no fault process ---------------------------------------


def test_a_script_that_asks_a_question_fails_at_once(
    transactional_db: None, host: DebianTestHost, host_server: Server
):
    """F13: nothing can wait for an answer: the question reads end-of-file."""
    operation = request_action(
        host_server,
        "probe",
        "install",
        params={"seconds": 30, "tag": "prompt", "prompt": True},
    )
    operation = run_now(operation)
    check_after([operation], ["command_failed"])
    assert operation.started_at and operation.finished_at
    assert (operation.finished_at - operation.started_at).total_seconds() < 20
    assert "exit status 1" in operation.error_message
    assert [e for e in probe_log(host) if e[1] == "prompt"] == [
        next(e for e in probe_log(host) if e[1] == "prompt")
    ], "the script went on past the question"


def test_three_failures_for_three_reasons_then_success(
    transactional_db: None,
    fresh_debian_host: DebianTestHost,
    make_server: Callable[..., Server],
):
    """F16: each attempt its own operation and reason; the record shows the
    latest; the reason is cleared when the next attempt starts."""
    from tests.testhosts.debian_host import hold_dpkg_lock

    host = fresh_debian_host
    key = host.client_key.export_private_key().decode()
    server = make_server("s16", host=host.host, port=host.port, private_key=key)

    with hold_dpkg_lock(host.root):
        first = run_now(request_action(server, "redis", "install"))
    assert "Could not get lock" in first.error_message

    Server.objects.filter(pk=server.pk).update(port=free_port())
    second = request_action(server, "redis", "retry")
    assert Database.objects.get(server=server).error_message == ""
    second = run_now(second)
    assert "connection refused" in second.error_message

    Server.objects.filter(pk=server.pk).update(port=host.port)
    with transaction.atomic():
        third = request_action(server, "redis", "retry")
        Operation.objects.filter(pk=third.pk).update(timeout_seconds=1)
    third = run_now(third)
    assert third.error_message == "timed out after 1 s"

    fourth = run_now(request_action(server, "redis", "retry"))
    assert fourth.state == OperationState.SUCCEEDED, fourth.error_message
    record_ = Database.objects.get(server=server)
    assert record_.status == "active" and record_.error_message == ""
    history = list(
        Operation.objects.filter(server=server)
        .order_by("pk")
        .values_list("attempt", "reason_class")
    )
    assert history == [
        (1, "command_failed"),
        (2, "connect_failed"),
        (3, "timed_out"),
        (4, ""),
    ]


def test_a_failing_first_stage_of_a_pipeline_fails_the_script(
    transactional_db: None, host: DebianTestHost, host_server: Server
):
    """F06: `grep … | sort` with grep failing is a failure, not a success."""
    operation = run_now(
        request_action(
            host_server,
            "probe",
            "install",
            params={"seconds": 0, "tag": "pipe", "pipeline": True},
        )
    )
    check_after([operation], ["command_failed"])
    assert "/nonexistent/file: No such file or directory" in operation.error_message
    assert ("end", "pipe") not in [e[:2] for e in probe_log(host)]


def test_a_lock_held_by_another_process_is_waited_for_visibly(
    transactional_db: None,
    fresh_debian_host: DebianTestHost,
    make_server: Callable[..., Server],
    settings,
):
    """F05: the operation says it waits for the lock, and succeeds once the
    other process lets go (the bound is the lock timeout, tested elsewhere)."""
    from brokeforge.lifecycle.waiting import waiting_reason
    from tests.testhosts.debian_host import hold_dpkg_lock

    settings.BROKEFORGE_APT_LOCK_TIMEOUT = 120
    host = fresh_debian_host
    key = host.client_key.export_private_key().decode()
    server = make_server("s5", host=host.host, port=host.port, private_key=key)
    lock = hold_dpkg_lock(host.root)
    lock.__enter__()
    try:
        operation = request_action(server, "redis", "install")
        worker = threading.Thread(target=_run_and_close, args=(operation,))
        worker.start()

        def says_it_waits() -> str | None:
            operation.refresh_from_db()
            reason = waiting_reason(operation)
            return reason if reason and "package manager lock" in reason else None

        shown = wait_for(says_it_waits, 90, "the wait for the lock to be shown")
    finally:
        lock.__exit__(None, None, None)
    worker.join(300)
    operation.refresh_from_db()
    assert operation.state == OperationState.SUCCEEDED, operation.error_message
    assert shown.startswith("waiting for the package manager lock")


def _run_and_close(operation: Operation) -> None:
    try:
        runner.OperationRunner(operation.pk, "test-worker").run()
    finally:
        connection.close()


def test_supervised_bare_workers_fail_a_killed_ones_operation_at_once(
    fleet: Fleet, host: DebianTestHost, host_server: Server
):
    """`brokeforge worker --processes 2` supervises like serve, without web."""
    fleet._start("worker", "--processes", "2")
    fleet.wait_for_workers(2)
    reset(host_server)
    operation = wait_running(probe(host_server, 60, tag="bare"))
    killed_at = now()
    os.kill(fleet.worker_pid(operation.worker_id), signal.SIGKILL)
    wait_terminal(operation, timeout=30)
    check_after([operation], ["worker_lost"])
    assert "killed by signal 9" in operation.error_message
    assert seconds_since(killed_at, operation) < 10
    assert not wait_no_leftovers(host.root)


def test_the_watchdog_ends_a_worker_stuck_past_its_deadline(
    fleet: Fleet, host: DebianTestHost, host_server: Server
):
    """Code stuck inside the worker, where no timeout reaches: the operation
    fails at its deadline and the watchdog ends the process; serve starts a
    new one."""
    fleet.serve(workers=1)
    with transaction.atomic():
        operation = request_action(
            host_server,
            "probe",
            "install",
            params={"seconds": 0, "tag": "stuck", "stall": 600},
        )
        Operation.objects.filter(pk=operation.pk).update(timeout_seconds=2)
    wait_for(lambda: Operation.objects.get(pk=operation.pk).worker_id, 30, "a claim")
    operation.refresh_from_db()
    pid = fleet.worker_pid(operation.worker_id)

    wait_terminal(operation, timeout=60)
    check_after([operation], ["timed_out"])
    assert operation.error_message.startswith("timed out after 2 s")

    def process_gone() -> bool:
        return not Path(f"/proc/{pid}").exists() or Path(
            f"/proc/{pid}/stat"
        ).read_text().split(") ")[1].startswith("Z")

    wait_for(process_gone, 60, "the watchdog to end the stuck worker")
    assert "ending this worker" in fleet.log_text()
    wait_for(
        lambda: Worker.objects.exclude(id=operation.worker_id).exists(),
        30,
        "serve to start a new worker",
    )


def test_an_interrupted_package_run_is_finished_before_the_next(
    transactional_db: None,
    fresh_debian_host: DebianTestHost,
    make_server: Callable[..., Server],
):
    """A run cut short leaves dpkg "interrupted" (an update journal in
    /var/lib/dpkg/updates) and apt refuses everything after it; the next
    package script finishes it first, so Retry works after a timeout."""
    host = fresh_debian_host
    key = host.client_key.export_private_key().decode()
    server = make_server("s-dpkg", host=host.host, port=host.port, private_key=key)
    (host.root / "var/lib/dpkg/updates/0000").write_text("")
    refused = subprocess.run(
        ["chroot", str(host.root), "apt-get", "check"],
        capture_output=True,
        text=True,
    )
    assert "dpkg was interrupted" in refused.stderr

    operation = run_now(request_action(server, "redis", "install"))

    assert operation.state == OperationState.SUCCEEDED, operation.error_message
    assert "finishing an interrupted earlier package run" in operation.output
