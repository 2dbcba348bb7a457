"""The state machine: allowed and refused transitions, and compare-and-set losers."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.db import transaction
from django_tasks_db.models import DBTaskResult

from brokeforge.lifecycle import machine
from brokeforge.lifecycle.errors import ActionRefused
from brokeforge.lifecycle.models import (
    Event,
    Operation,
    OperationState,
    RecordStatus,
)
from brokeforge.packages.models import Database
from brokeforge.packages.service import request_action
from brokeforge.servers.models import Server

pytestmark = pytest.mark.django_db

WORKER = "w:1:aaaa"
OTHER_WORKER = "w:2:bbbb"
BUSY = ["pending", "installing", "updating", "uninstalling"]


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server("web-1")


def record_in(server: Server, status: str, last_action: str = "install") -> Database:
    return Database.objects.create(
        server=server, kind="redis", status=status, last_action=last_action
    )


def reload(record: Database) -> Database:
    return Database.objects.get(pk=record.pk)


def test_it_creates_a_pending_record_a_queued_operation_and_its_task(server: Server):
    operation = request_action(server, "redis", "install")

    record = Database.objects.get(server=server, kind="redis")
    assert record.status == RecordStatus.PENDING
    assert operation.state == OperationState.QUEUED
    assert operation.attempt == 1
    task = DBTaskResult.objects.get(id=operation.task_id)
    assert task.args_kwargs["args"] == [operation.pk]
    assert list(Event.objects.values_list("status", flat=True)) == ["pending"]


def test_it_enqueues_nothing_when_the_request_rolls_back(server: Server):
    with pytest.raises(RuntimeError), transaction.atomic():
        request_action(server, "redis", "install")
        raise RuntimeError("the request failed after the install was asked for")

    assert not Database.objects.exists()
    assert not Operation.objects.exists()
    assert not DBTaskResult.objects.exists()


def test_it_walks_an_install_to_active(server: Server):
    operation = request_action(server, "redis", "install")

    claimed = machine.claim(operation.pk, WORKER)
    assert claimed is not None
    assert claimed.state == OperationState.RUNNING
    assert claimed.worker_id == WORKER
    assert claimed.deadline is not None
    record = Database.objects.get()
    assert record.status == RecordStatus.INSTALLING

    assert machine.succeed(claimed, WORKER)
    assert reload(record).status == RecordStatus.ACTIVE
    claimed.refresh_from_db()
    assert claimed.state == OperationState.SUCCEEDED
    assert list(Event.objects.values_list("status", flat=True)) == [
        "pending",
        "installing",
        "active",
    ]


def test_it_fails_the_record_with_the_reason(server: Server):
    operation = request_action(server, "redis", "install")
    claimed = machine.claim(operation.pk, WORKER)
    assert claimed is not None

    assert machine.fail(claimed, "E: Unable to locate package", "command_failed")

    record = Database.objects.get()
    assert record.status == RecordStatus.FAILED
    assert record.error_message == "E: Unable to locate package"
    event = Event.objects.last()
    assert event is not None
    assert (event.status, event.error_message) == (
        "failed",
        "E: Unable to locate package",
    )


@pytest.mark.parametrize(
    ("last_action", "requested_status"),
    [
        ("install", RecordStatus.PENDING),
        ("update", RecordStatus.UPDATING),
        ("remove", RecordStatus.UNINSTALLING),
    ],
)
def test_it_retries_the_last_action_and_clears_the_error(
    server: Server, last_action: str, requested_status: RecordStatus
):
    record = failed_after(server, last_action)

    operation = request_action(server, "redis", "retry")

    record = reload(record)
    assert record.status == requested_status
    assert record.error_message == ""
    assert operation.action == last_action
    if last_action == "remove":
        assert operation.params == {"data": "keep"}
        assert operation.attempt == 2


def failed_after(server: Server, action: str) -> Database:
    """Ask for `action` on Redis through the machine, then fail it."""
    if action != "install":
        record_in(server, "active")
    params = {"data": "keep"} if action == "remove" else None
    operation = request_action(server, "redis", action, params=params)
    machine.fail(operation, "timed out after 5 s", "timed_out")
    record = Database.objects.get()
    assert record.status == RecordStatus.FAILED
    return record


def test_it_removes_a_failed_record_and_deletes_it_when_the_remover_succeeds(
    server: Server,
):
    record = record_in(server, "failed")

    operation = request_action(server, "redis", "remove", params={"data": "delete"})
    assert reload(record).status == RecordStatus.UNINSTALLING
    claimed = machine.claim(operation.pk, WORKER)
    assert claimed is not None
    assert machine.succeed(claimed, WORKER)

    assert not Database.objects.filter(pk=record.pk).exists()
    assert Event.objects.last().status == "removed"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("status", "action", "params", "says"),
    [
        ("active", "install", None, "already installed"),
        ("active", "retry", None, "only a failed record can be retried"),
        ("failed", "install", None, "use Retry"),
        ("failed", "update", None, "use Retry"),
        *[(s, "install", None, f"is {s}: wait") for s in BUSY],
        *[(s, "update", None, f"is {s}: wait") for s in BUSY],
        *[(s, "remove", {"data": "keep"}, f"is {s}: wait") for s in BUSY],
        *[(s, "retry", None, f"is {s}: wait") for s in BUSY],
        ("active", "remove", None, "say what happens to Redis's data"),
        ("active", "remove", {"data": "maybe"}, "say what happens"),
        ("active", "update", {"force": True}, "takes no options"),
        ("active", "reinstall", None, "unknown action"),
    ],
)
def test_it_refuses_and_changes_nothing(
    server: Server, status: str, action: str, params: dict | None, says: str
):
    record = record_in(server, status)

    with pytest.raises(ActionRefused, match=says):
        request_action(server, "redis", action, params=params)

    assert reload(record).status == status
    assert not Operation.objects.exists()


def test_it_refuses_update_and_remove_of_what_is_not_installed(server: Server):
    for action, params in [("update", None), ("remove", {"data": "keep"})]:
        with pytest.raises(ActionRefused, match="not installed"):
            request_action(server, "redis", action, params=params)
    with pytest.raises(ActionRefused, match="unknown package kind"):
        request_action(server, "memcached", "install")
    assert not Database.objects.exists()


def test_it_refuses_mysql_next_to_mariadb(server: Server):
    Database.objects.create(
        server=server, kind="mariadb", status="active", last_action="install"
    )
    with pytest.raises(ActionRefused, match="remove MariaDB first"):
        request_action(server, "mysql", "install")


def test_it_refuses_a_second_request_for_a_busy_record(server: Server):
    request_action(server, "redis", "install")
    with pytest.raises(ActionRefused, match="is pending"):
        request_action(server, "redis", "install")
    assert Operation.objects.count() == 1


def test_it_keeps_one_unfinished_operation_per_record_in_the_database(
    server: Server,
):
    # Even a caller that skipped the status check cannot add a second one.
    record = record_in(server, "active")
    machine.request(record, machine.Action.UPDATE)
    with pytest.raises(ActionRefused, match="already has an operation"):
        machine.request(record, machine.Action.UPDATE, new_record=True)
    assert Operation.objects.count() == 1


def test_it_lets_only_one_worker_claim(server: Server):
    operation = request_action(server, "redis", "install")

    assert machine.claim(operation.pk, WORKER) is not None
    assert machine.claim(operation.pk, OTHER_WORKER) is None
    assert Operation.objects.get().worker_id == WORKER


def test_it_ignores_a_late_result_after_the_operation_ended(server: Server):
    operation = request_action(server, "redis", "install")
    claimed = machine.claim(operation.pk, WORKER)
    assert claimed is not None
    assert machine.fail(claimed, "worker lost", "worker_lost")

    # The worker presumed dead wakes up and reports success: it changes nothing.
    assert not machine.succeed(claimed, WORKER)
    assert not machine.fail(claimed, "other", "command_failed", worker_id=WORKER)

    record = Database.objects.get()
    assert (record.status, record.error_message) == ("failed", "worker lost")
    assert Operation.objects.get().error_message == "worker lost"


def test_it_lets_only_the_claiming_worker_finish(server: Server):
    operation = request_action(server, "redis", "install")
    claimed = machine.claim(operation.pk, WORKER)
    assert claimed is not None

    assert not machine.succeed(claimed, OTHER_WORKER)
    assert Database.objects.get().status == RecordStatus.INSTALLING
    assert machine.succeed(claimed, WORKER)


def test_it_ends_a_queued_operation_whose_record_was_deleted(server: Server, caplog):
    operation = request_action(server, "redis", "install")
    Database.objects.all().delete()

    assert machine.claim(operation.pk, WORKER) is None

    operation.refresh_from_db()
    assert operation.state == OperationState.CANCELLED
    assert "record was deleted" in operation.error_message
    assert any(r.action == "operation_orphaned" for r in caplog.records)  # type: ignore[attr-defined]


def test_it_ends_a_running_operation_whose_record_was_deleted(server: Server, caplog):
    operation = request_action(server, "redis", "install")
    claimed = machine.claim(operation.pk, WORKER)
    assert claimed is not None
    Database.objects.all().delete()

    assert machine.succeed(claimed, WORKER)

    claimed.refresh_from_db()
    assert claimed.state == OperationState.SUCCEEDED
    assert any(r.action == "record_gone" for r in caplog.records)  # type: ignore[attr-defined]


def test_it_counts_attempts_per_retry_chain(server: Server):
    record = record_in(server, "active")
    first = request_action(server, "redis", "update")
    machine.fail(first, "boom", "command_failed")

    retried = request_action(server, "redis", "retry")
    assert (first.attempt, retried.attempt) == (1, 2)

    claimed = machine.claim(retried.pk, WORKER)
    assert claimed is not None
    machine.succeed(claimed, WORKER)
    assert reload(record).status == RecordStatus.ACTIVE
    assert request_action(server, "redis", "update").attempt == 1
