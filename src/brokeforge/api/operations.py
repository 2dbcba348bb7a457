"""/api/v1/operations and /api/v1/audit: the ledger and who did what."""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest
from ninja import Field, Query, Router, Schema, Status

from brokeforge.accounts import audit
from brokeforge.api import serialize
from brokeforge.api.common import ERRORS, MAX_ID, WRITE_ERRORS, PathId, actor
from brokeforge.api.schemas import AuditOut, OperationOut, OutputOut
from brokeforge.lifecycle.models import Operation
from brokeforge.packages import service
from brokeforge.servers import access

router = Router(tags=["operations"])
audit_router = Router(tags=["audit"])


class ListFilter(Schema):
    server_id: int | None = Field(None, ge=1, le=MAX_ID)
    limit: int = Field(50, ge=1, le=500)


@router.get("", response={200: list[OperationOut], **ERRORS}, summary="Operations")
def list_operations(
    request: HttpRequest, filters: Query[ListFilter]
) -> list[dict[str, Any]]:
    operations = access.visible_operations(request.user).select_related(
        "server", "requested_by"
    )
    if filters.server_id is not None:
        operations = operations.filter(server_id=filters.server_id)
    return [serialize.operation(op) for op in operations[: filters.limit]]


@router.get(
    "/{operation_id}", response={200: OperationOut, **ERRORS}, summary="An operation"
)
def get_operation(request: HttpRequest, operation_id: PathId) -> dict[str, Any]:
    return serialize.operation(_operation(request, operation_id))


@router.get(
    "/{operation_id}/output",
    response={200: OutputOut, **ERRORS},
    summary="An operation's output from a position on",
    description="Pass the previous answer's next_offset as offset to follow "
    "the output as it grows.",
)
def get_output(
    request: HttpRequest,
    operation_id: int,
    offset: int = Query(0, ge=0, le=MAX_ID),  # type: ignore[type-arg]
) -> dict[str, Any]:
    return serialize.output(_operation(request, operation_id), offset)


@router.post(
    "/{operation_id}/cancel",
    response={202: OperationOut, **WRITE_ERRORS},
    summary="Cancel a queued or running operation",
    description="A queued operation ends at once, its record failed; a running "
    "one is stopped by its worker within seconds (state shows when).",
)
def cancel_operation(request: HttpRequest, operation_id: PathId) -> Status[Any]:
    operation = _operation(request, operation_id)
    cancelled = service.cancel_operation(operation, actor=actor(request))
    cancelled.refresh_from_db()
    return Status(202, serialize.operation(cancelled))


@audit_router.get(
    "", response={200: list[AuditOut], **ERRORS}, summary="Who did what, newest first"
)
def list_audit(
    request: HttpRequest, filters: Query[ListFilter]
) -> list[dict[str, Any]]:
    entries = audit.visible_entries(request.user)
    if filters.server_id is not None:
        entries = entries.filter(server_id=filters.server_id)
    return [serialize.audit_entry(e) for e in entries[: filters.limit]]


def _operation(request: HttpRequest, operation_id: int) -> Operation:
    operation = (
        access.visible_operations(request.user)
        .select_related("server", "requested_by")
        .filter(pk=operation_id)
        .first()
    )
    if operation is None:
        raise Http404(f"no operation {operation_id}")
    return operation
