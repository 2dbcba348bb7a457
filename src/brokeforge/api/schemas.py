"""What the API accepts and answers, as typed schemas (the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from ninja import Field, Schema


class Error(Schema):
    detail: str
    #: For invalid input: the field each problem is about.
    errors: list[FieldError] = []


class FieldError(Schema):
    field: str
    message: str


class ServerIn(Schema):
    name: str = Field(max_length=63)
    host: str = Field(max_length=253)
    port: int = Field(22, ge=1, le=65535)
    user: str = Field("root", max_length=32)
    private_key: str | None = Field(
        None,
        max_length=64 * 1024,
        description="An unencrypted private key; omit it to generate an ed25519 key",
    )


class ServerChange(Schema):
    name: str | None = Field(None, max_length=63)
    host: str | None = Field(None, max_length=253)
    port: int | None = Field(None, ge=1, le=65535)
    user: str | None = Field(None, max_length=32)


class ServerOut(Schema):
    id: int
    name: str
    host: str
    port: int
    user: str
    owner: str | None
    public_key: str
    host_key_fingerprint: str | None
    created_at: datetime


class CheckIn(Schema):
    repin: bool = Field(
        False, description="Pin the key the server presents now (after a reinstall)"
    )


class CheckOut(Schema):
    ok: bool
    server: ServerOut
    host_key_fingerprint: str | None
    error_message: str


class OperationOut(Schema):
    id: int
    server_id: int
    server: str
    record: str
    kind: str
    action: str
    params: dict[str, Any]
    attempt: int
    state: str
    requested_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    timeout_seconds: int
    error_message: str
    reason_class: str
    output_length: int
    #: What an unfinished operation waits for, in words ("queued behind ...").
    waiting: str | None
    cancel_requested_by: str | None


class RecordOut(Schema):
    id: int
    kind: str
    label: str
    kind_label: str
    server_id: int
    server: str
    status: str
    error_message: str
    version: str
    last_action: str
    allowed_actions: list[str]
    operation: OperationOut | None
    #: Only in the answer that created the record, when BrokeForge generated
    #: its password: shown this once.
    generated_secret: str | None = None


class ActionIn(Schema):
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="The kind's options for this action (see the kind's fields)",
    )


class OutputOut(Schema):
    operation_id: int
    state: str
    offset: int
    skipped: int
    text: str
    next_offset: int
    finished: bool
    error_message: str


class AuditOut(Schema):
    id: int
    at: datetime
    user: str
    token: str | None
    via: str
    address: str
    action: str
    server_id: int | None
    server: str | None
    target: str
    operation_id: int | None
    outcome: str
    detail: str


class FieldOut(Schema):
    name: str
    label: str
    help: str
    required: bool
    choices: list[list[str]]
    secret: bool
    boolean: bool
    default: str


class KindOut(Schema):
    name: str
    label: str
    family: str
    many: bool
    parent: str | None
    verbs: dict[str, str]
    fields: list[FieldOut]
    update_fields: list[FieldOut]
    remove_fields: list[FieldOut]


DataChoice = Literal["keep", "delete"]

Error.model_rebuild()
