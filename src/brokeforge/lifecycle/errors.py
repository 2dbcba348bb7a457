"""Failures an operation can end with, each with its own wording.

An `OperationFailure` is expected: its message is what the person reads on
the failed record. Any other exception is a crash; the runner still fails
the record, naming the exception type.
"""

from __future__ import annotations


class OperationFailure(Exception):
    """A failure whose message a person can act on."""

    #: A stable name of the failure class, stored with the operation.
    reason_class = "failed"

    def __init__(self, message: str, *, output_tail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.output_tail = output_tail


class ActionRefused(Exception):
    """A request that the record's current state does not allow.

    Raised before anything changes; the message says why and what is allowed.
    """


class InvalidOption(ActionRefused):
    """An option a person gave is wrong in itself, whatever the record's state.

    `field` is the option's name as the API, the web form and the CLI use it
    (`domain`, `schedule`, `port`...), so each can show `message` next to it:
    the API answers 400 naming the field where a plain `ActionRefused`
    answers 409.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class OperationCancelled(OperationFailure):
    """A person cancelled the running operation; the remote command was killed."""

    reason_class = "cancelled"


class WorkerShutdown(OperationFailure):
    """The worker was asked to stop and the operation outlived its grace."""

    reason_class = "worker_shutdown"


class StuckPastDeadline(OperationFailure):
    """The operation outlived its deadline where no timeout of its own reached
    it; the watchdog ended it."""

    reason_class = "timed_out"
