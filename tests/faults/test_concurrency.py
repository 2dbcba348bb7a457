"""One worker process, many operations at once, and what faults do to them.

Each test runs real BrokeForge processes on the test database against the
real Debian test host, registered as several servers (one per operation):
operations on different servers run side by side, while the per-server
queue still keeps one server's package operations in order.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.db import connection, transaction

from brokeforge.lifecycle.models import Operation, OperationState, Worker
from brokeforge.packages.service import request_action
from brokeforge.servers.models import Server
from tests.faults.harness import (
    Fleet,
    check_after,
    free_port,
    wait_for,
    wait_no_leftovers,
    wait_running,
    wait_terminal,
)
from tests.faults.test_faults import probe, probe_log
from tests.testhosts.fixtures import DebianTestHost

pytestmark = [
    pytest.mark.debian_host,
    pytest.mark.timeout(600),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def servers(host: DebianTestHost, make_server: Callable[..., Server]) -> list[Server]:
    """Three servers, all on the Debian test host."""
    key = host.client_key.export_private_key().decode()
    return [
        make_server(f"c{n}", host=host.host, port=host.port, private_key=key)
        for n in range(3)
    ]


def test_one_worker_process_runs_operations_on_several_servers_at_once(
    fleet: Fleet, host: DebianTestHost, servers: list[Server]
):
    fleet.worker("--concurrency", "3")
    operations = [probe(s, 4, tag=f"side{n}") for n, s in enumerate(servers)]
    for operation in operations:
        wait_terminal(operation, timeout=90)
    check_after(operations)
    assert {o.state for o in operations} == {OperationState.SUCCEEDED}
    assert len({o.worker_id for o in operations}) == 1
    # The host's own log: every script started before any of them ended.
    log = probe_log(host)
    starts = [moment for event, _, moment in log if event == "start"]
    ends = [moment for event, _, moment in log if event == "end"]
    assert len(starts) == len(ends) == 3
    assert max(starts) < min(ends), log


def test_running_operations_show_their_output_before_they_end(
    transactional_db: None, tmp_path: Path, servers: list[Server]
):
    """A worker writes its operations' output together; each one's output
    still shows while it runs, before any heartbeat (every 5 s here) would
    have written it."""
    fleet = Fleet(tmp_path, BROKEFORGE_LEASE_SECONDS="60")
    try:
        fleet.worker("--concurrency", "3")
        operations = [probe(s, 4.5, tag=f"live{n}") for n, s in enumerate(servers)]

        def shown_while_running(operation: Operation) -> bool:
            operation.refresh_from_db()
            assert operation.state != OperationState.SUCCEEDED, "it ended first"
            return f"probe {operation.params['tag']} running" in operation.output

        for operation in operations:
            wait_for(lambda op=operation: shown_while_running(op), 30, "its output")
        for operation in operations:
            wait_terminal(operation, timeout=90)
    finally:
        fleet.stop()
    assert {o.state for o in operations} == {OperationState.SUCCEEDED}


def test_killing_a_worker_fails_every_operation_it_ran(
    fleet: Fleet, host: DebianTestHost, servers: list[Server]
):
    fleet.serve(1, "--concurrency", "3")
    operations = [
        wait_running(probe(s, 60, tag=f"kill{n}")) for n, s in enumerate(servers)
    ]
    assert len({o.worker_id for o in operations}) == 1
    os.kill(fleet.worker_pid(operations[0].worker_id), signal.SIGKILL)
    for operation in operations:
        wait_terminal(operation, timeout=30)
    check_after(operations, ["worker_lost"] * 3)
    for operation in operations:
        assert "killed by signal 9" in operation.error_message
    assert not wait_no_leftovers(host.root)


def test_a_worker_killed_with_its_supervisor_is_found_by_the_web_process(
    transactional_db: None, host: DebianTestHost, servers: list[Server], tmp_path: Path
):
    """With a lease of ten minutes, only the web process's look at this
    host's processes can end the operation soon."""
    fleet = Fleet(tmp_path, BROKEFORGE_LEASE_SECONDS="600")
    try:
        fleet._start("web", "--port", str(free_port()))
        workers = fleet._start("worker", "--processes", "2")
        fleet.wait_for_workers(2)
        operation = wait_running(probe(servers[0], 60, tag="whole"))
        os.killpg(workers.pid, signal.SIGKILL)
        os.kill(fleet.worker_pid(operation.worker_id), signal.SIGKILL)
        workers.wait()
        wait_terminal(operation, timeout=30)
        check_after([operation], ["worker_lost"])
        assert "found by the reaper of another BrokeForge process" in (
            operation.error_message
        )
        assert not wait_no_leftovers(host.root)
    finally:
        fleet.stop()


def test_the_watchdog_fails_a_stuck_operation_and_lets_the_others_finish(
    fleet: Fleet, host: DebianTestHost, servers: list[Server]
):
    fleet.serve(1, "--concurrency", "2")
    healthy = wait_running(probe(servers[0], 12, tag="healthy"))
    with transaction.atomic():
        stuck = request_action(
            servers[1],
            "probe",
            "install",
            params={"seconds": 0, "tag": "stuck", "stall": 600},
        )
        Operation.objects.filter(pk=stuck.pk).update(timeout_seconds=2)
    wait_terminal(stuck, timeout=60)
    wait_terminal(healthy, timeout=60)
    check_after([stuck, healthy], ["timed_out", ""])
    assert stuck.error_message.startswith("timed out after 2 s")
    assert healthy.state == OperationState.SUCCEEDED
    assert healthy.worker_id == stuck.worker_id
    # Then the untrusted process ends, and serve starts a new one.
    wait_for(
        lambda: (
            Worker.objects.exclude(id=stuck.worker_id)
            .filter(stopped_at__isnull=True)
            .exists()
        ),
        60,
        "serve to start a new worker",
    )
    assert "ending this worker" in fleet.log_text()


def test_on_postgresql_an_idle_worker_wakes_on_notify(
    transactional_db: None, host: DebianTestHost, servers: list[Server], tmp_path: Path
):
    """With its safety-net look set to an hour, only the NOTIFY sent at
    dispatch can wake the worker."""
    if connection.vendor != "postgresql":
        pytest.skip("NOTIFY is PostgreSQL's; SQLite workers look every 0.1 s")
    fleet = Fleet(tmp_path, BROKEFORGE_QUEUE_POLL_SECONDS="3600")
    try:
        fleet.worker()

        def listening() -> bool:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE query LIKE 'LISTEN brokeforge_dispatch%%'"
                )
                return bool(cursor.fetchone()[0])

        # Once it listens, it has taken what was there and sleeps.
        wait_for(listening, 30, "the worker to listen")
        time.sleep(1)  # past its first look at the queue
        operation = probe(servers[0], 0, tag="notify")
        wait_terminal(operation, timeout=30)
        check_after([operation])
        assert operation.state == OperationState.SUCCEEDED
    finally:
        fleet.stop()
