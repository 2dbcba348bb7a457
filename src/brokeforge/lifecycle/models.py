"""The lifecycle vocabulary and ledger shared by every managed record.

`RecordStatus` is what a person sees on a record; `Operation` is the ledger
entry of one attempt at one action; `Event` is the append-only change log the
live pages read. Only `brokeforge.lifecycle.machine` changes them.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Q


class RecordStatus(models.TextChoices):
    #: Install requested; its operation waits for a worker.
    PENDING = "pending"
    INSTALLING = "installing"
    #: Installed and verified on the server.
    ACTIVE = "active"
    UPDATING = "updating"
    UNINSTALLING = "uninstalling"
    #: The last operation failed; `error_message` says why.
    FAILED = "failed"


TRANSITIONAL_STATUSES = frozenset(
    {
        RecordStatus.PENDING,
        RecordStatus.INSTALLING,
        RecordStatus.UPDATING,
        RecordStatus.UNINSTALLING,
    }
)


class Action(models.TextChoices):
    INSTALL = "install"
    UPDATE = "update"
    REMOVE = "remove"


class OperationState(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


UNFINISHED_STATES = (OperationState.QUEUED, OperationState.RUNNING)
TERMINAL_STATES = (
    OperationState.SUCCEEDED,
    OperationState.FAILED,
    OperationState.CANCELLED,
)


class ManagedRecord(models.Model):
    """Base of every record BrokeForge installs, updates and removes."""

    server = models.ForeignKey(
        "servers.Server", on_delete=models.CASCADE, related_name="%(class)ss"
    )
    status = models.CharField(
        max_length=16, choices=RecordStatus.choices, default=RecordStatus.PENDING
    )
    error_message = models.TextField(blank=True)
    #: The action of the latest operation; Retry repeats it.
    last_action = models.CharField(max_length=16, choices=Action.choices)
    status_changed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True

    def label(self) -> str:
        """How a person names this record, e.g. "Redis on web-1"."""
        raise NotImplementedError

    def kind_name(self) -> str:
        """The package kind that manages this record."""
        raise NotImplementedError

    @property
    def is_busy(self) -> bool:
        return self.status in TRANSITIONAL_STATUSES

    def operations(self) -> models.QuerySet[Operation]:
        return Operation.objects.filter(
            record_type=ContentType.objects.get_for_model(self), record_id=self.pk
        )

    def current_operation(self) -> Operation | None:
        return self.operations().order_by("-id").first()


class Operation(models.Model):
    """One attempt at one action on one record: the ledger entry."""

    record_type = models.ForeignKey(ContentType, on_delete=models.PROTECT)
    record_id = models.PositiveBigIntegerField()
    #: What the record was ("redis on web-1"), kept after the record is gone.
    record_label = models.CharField(max_length=200)
    server = models.ForeignKey(
        "servers.Server", on_delete=models.CASCADE, related_name="operations"
    )
    action = models.CharField(max_length=16, choices=Action.choices)
    #: The package kind that handles this record (see packages.registry).
    kind = models.CharField(max_length=32)
    #: Parameters the person chose (for example whether to keep data).
    params = models.JSONField(default=dict, blank=True)
    attempt = models.PositiveIntegerField(default=1)
    state = models.CharField(
        max_length=16, choices=OperationState.choices, default=OperationState.QUEUED
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    task_id = models.CharField(max_length=64, blank=True)
    worker_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    timeout_seconds = models.PositiveIntegerField(default=600)
    deadline = models.DateTimeField(null=True, blank=True)
    error_message = models.TextField(blank=True)
    #: A stable name for the class of failure (timed_out, connect_failed, ...).
    reason_class = models.CharField(max_length=32, blank=True)
    #: The last `MAX_OUTPUT_CHARS` of the output (see the runner).
    output = models.TextField(blank=True)
    #: How many characters were dropped from the head of `output`; with it,
    #: a follower knows where in the whole stream the stored text starts.
    output_dropped = models.PositiveBigIntegerField(default=0)
    #: Whether it uses the server's package manager: such operations run one
    #: at a time per server, in request order (see `machine.blocker`).
    uses_package_manager = models.BooleanField(default=True)
    #: When nothing was ahead of it any more and its task was enqueued; None
    #: while it waits behind another operation on its server.
    ready_at = models.DateTimeField(null=True, blank=True)
    #: Set when a person asks to cancel a running operation; its worker
    #: stops the remote command and ends it, or the reaper does.
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # Invariant 1: at most one unfinished operation per record.
            models.UniqueConstraint(
                fields=["record_type", "record_id"],
                condition=Q(state__in=["queued", "running"]),
                name="one_unfinished_operation_per_record",
            ),
        ]
        indexes = [models.Index(fields=["state", "server"])]

    def __str__(self) -> str:
        return f"{self.action} {self.record_label} (#{self.pk}, {self.state})"

    def describe(self) -> str:
        """How a person names it: "install of Redis on web-1 (#12)"."""
        return f"{self.action} of {self.record_label} (#{self.pk})"

    @property
    def is_finished(self) -> bool:
        return self.state in TERMINAL_STATES


class Event(models.Model):
    """An append-only log of status changes, written with each change."""

    created_at = models.DateTimeField(auto_now_add=True)
    server = models.ForeignKey(
        "servers.Server", on_delete=models.CASCADE, related_name="events"
    )
    record_type = models.ForeignKey(ContentType, on_delete=models.PROTECT)
    record_id = models.PositiveBigIntegerField()
    record_label = models.CharField(max_length=200)
    #: The record's new status, or "removed" once its remover succeeded.
    status = models.CharField(max_length=16)
    error_message = models.TextField(blank=True)
    operation = models.ForeignKey(
        Operation, null=True, on_delete=models.SET_NULL, related_name="events"
    )

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.record_label} -> {self.status}"


class Worker(models.Model):
    """One start of a worker process: its liveness, by heartbeat.

    Liveness belongs to a process start, not a name: every start registers
    a new row under a fresh id, so a restarted worker never vouches for the
    operations its previous life held.
    """

    id = models.CharField(max_length=64, primary_key=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    #: The process's start time in clock ticks since boot and the boot's id:
    #: with the pid, they tell a live process from a reused pid.
    process_start = models.CharField(max_length=100, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField()
    #: When it stopped, or was found gone; None while it runs.
    stopped_at = models.DateTimeField(null=True, blank=True)
    #: How it ended: "stopped", or what found it gone.
    end_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["stopped_at", "heartbeat_at"])]

    def __str__(self) -> str:
        return f"worker {self.id} (pid {self.pid} on {self.hostname})"
