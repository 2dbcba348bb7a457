"""The reaper and the supervisor end what a lost worker held (F04, F07, F11, F03)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.utils import timezone

from brokeforge.lifecycle import machine
from brokeforge.lifecycle.models import Operation, OperationState, RecordStatus
from brokeforge.lifecycle.reaper import reap
from brokeforge.packages.models import Database
from brokeforge.packages.service import request_action
from brokeforge.servers.models import Server
from brokeforge.supervisor import Supervisor

WORKER = "host:1:aaaa"


@pytest.fixture
def running(make_server: Callable[..., Server]) -> Operation:
    operation = request_action(make_server("web-1"), "redis", "install")
    claimed = machine.claim(operation.pk, WORKER)
    assert claimed is not None
    return claimed


def age(operation: Operation, *, heartbeat: int, deadline: int) -> None:
    """Move the heartbeat and the deadline this many seconds from now."""
    now = timezone.now()
    Operation.objects.filter(pk=operation.pk).update(
        heartbeat_at=now + timedelta(seconds=heartbeat),
        deadline=now + timedelta(seconds=deadline),
    )


@pytest.mark.django_db
def test_it_fails_an_operation_whose_worker_stopped_heartbeating(running):
    age(running, heartbeat=-20, deadline=500)

    assert reap() == 1

    record = Database.objects.get()
    assert record.status == RecordStatus.FAILED
    assert record.error_message.startswith(
        f"worker lost: no heartbeat for 20 s from worker {WORKER}"
    )
    assert Operation.objects.get().reason_class == "worker_lost"
    assert reap() == 0


@pytest.mark.django_db
def test_it_leaves_a_long_but_healthy_operation_alone(running):
    Operation.objects.filter(pk=running.pk).update(
        started_at=timezone.now() - timedelta(minutes=6)
    )
    age(running, heartbeat=-2, deadline=300)

    assert reap() == 0
    assert Database.objects.get().status == RecordStatus.INSTALLING


@pytest.mark.django_db
def test_it_fails_an_operation_past_its_deadline(running):
    age(running, heartbeat=0, deadline=-1)

    assert reap() == 1

    assert Database.objects.get().error_message.startswith("timed out after 600 s")


@pytest.mark.django_db
def test_it_ignores_the_worker_that_wakes_up_after_being_reaped(running):
    age(running, heartbeat=-60, deadline=500)
    reap()

    assert not machine.succeed(running, WORKER)

    record = Database.objects.get()
    assert record.status == RecordStatus.FAILED
    assert "worker lost" in record.error_message


@pytest.mark.django_db
def test_it_accepts_a_new_install_once_the_stale_one_was_reaped(running):
    age(running, heartbeat=-60, deadline=500)
    reap()

    retried = request_action(running.server, "redis", "retry")

    assert retried.attempt == 2
    assert Database.objects.get().status == RecordStatus.PENDING


@pytest.fixture
def supervisor(monkeypatch: pytest.MonkeyPatch) -> Supervisor:
    def sleeper(self: Supervisor, *args: str, env: object = None) -> object:
        return subprocess.Popen(["sleep", "60"])

    monkeypatch.setattr(Supervisor, "_spawn", sleeper)
    supervisor = Supervisor("127.0.0.1", 0, workers=1)
    supervisor.start_worker(0)
    return supervisor


def hand_to(supervisor: Supervisor, operation: Operation) -> None:
    Operation.objects.filter(pk=operation.pk).update(worker_id=supervisor.worker_ids[0])


@pytest.mark.django_db(transaction=True)
def test_it_fails_the_operation_of_a_killed_worker_at_once(running, supervisor):
    hand_to(supervisor, running)
    child = supervisor.workers[0]
    assert child is not None

    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    supervisor.step()

    record = Database.objects.get()
    assert record.status == RecordStatus.FAILED
    assert record.error_message.startswith(
        "worker lost: worker process exited (killed by signal 9 (SIGKILL)"
    )
    assert supervisor.workers[0] is not child
    supervisor.stop()


@pytest.mark.django_db(transaction=True)
def test_it_fails_what_is_running_when_it_stops(running, supervisor):
    hand_to(supervisor, running)

    supervisor.stop()

    operation = Operation.objects.get()
    assert operation.state == OperationState.FAILED
    assert operation.error_message.startswith("interrupted by a worker shutdown")
