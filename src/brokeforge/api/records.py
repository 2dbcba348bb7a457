"""/api/v1/servers/{id}/records/{kind}: the packages on a server.

Records are addressed by kind, so every kind in `packages.registry` is
served by the same endpoints; a kind's options go in `params`.
"""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest
from ninja import Router, Status

from brokeforge.api import serialize
from brokeforge.api.common import (
    ERRORS,
    WRITE_ERRORS,
    PathId,
    actor,
    server_of,
)
from brokeforge.api.schemas import DataChoice, InstallIn, RecordOut
from brokeforge.lifecycle.errors import ActionRefused
from brokeforge.packages import service
from brokeforge.packages.registry import KINDS

router = Router(tags=["records"])


@router.get(
    "/{server_id}/records",
    response={200: list[RecordOut], **ERRORS},
    summary="Every record on a server",
)
def list_records(request: HttpRequest, server_id: PathId) -> list[dict[str, Any]]:
    server = server_of(request, server_id)
    return [serialize.record(r) for r in service.server_records(server)]


@router.get(
    "/{server_id}/records/{kind}",
    response={200: RecordOut, **ERRORS},
    summary="One record",
)
def get_record(request: HttpRequest, server_id: PathId, kind: str) -> dict[str, Any]:
    server = server_of(request, server_id)
    record = service.get_record(server, _kind(kind))
    if record is None:
        raise Http404(f"{KINDS[kind].label} is not installed on {server.name}")
    return serialize.record(record)


@router.post(
    "/{server_id}/records/{kind}",
    response={202: RecordOut, **WRITE_ERRORS},
    summary="Install a package",
    description="Answers 202 with the record pending and its queued operation.",
)
def install(
    request: HttpRequest, server_id: PathId, kind: str, payload: InstallIn | None = None
) -> Status[Any]:
    params = payload.params if payload is not None else {}
    return _act(request, server_id, kind, "install", params)


@router.post(
    "/{server_id}/records/{kind}/update",
    response={202: RecordOut, **WRITE_ERRORS},
    summary="Update an active package",
)
def update(request: HttpRequest, server_id: PathId, kind: str) -> Status[Any]:
    return _act(request, server_id, kind, "update", None)


@router.post(
    "/{server_id}/records/{kind}/retry",
    response={202: RecordOut, **WRITE_ERRORS},
    summary="Repeat a failed record's last action",
)
def retry(request: HttpRequest, server_id: PathId, kind: str) -> Status[Any]:
    return _act(request, server_id, kind, "retry", None)


@router.delete(
    "/{server_id}/records/{kind}",
    response={202: RecordOut, **WRITE_ERRORS},
    summary="Remove a package",
    description="`data=keep` moves its data to /var/backups/brokeforge first; "
    "`data=delete` deletes it. The record goes once the removal succeeded.",
)
def remove(
    request: HttpRequest, server_id: PathId, kind: str, data: DataChoice
) -> Status[Any]:
    return _act(request, server_id, kind, "remove", {"data": data})


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise Http404(f"no package kind {kind!r}: known are {', '.join(KINDS)}")
    return kind


def _act(
    request: HttpRequest,
    server_id: PathId,
    kind: str,
    action: str,
    params: dict[str, Any] | None,
) -> Status[Any]:
    server = server_of(request, server_id)
    operation = service.request_action(
        server, _kind(kind), action, params=params, actor=actor(request)
    )
    record = service.get_record(server, kind)
    if record is None:
        # Only a removal deletes a record, and only after it ran: a record
        # gone a moment after its request means a removal just finished.
        raise ActionRefused(f"{operation.record_label} was removed meanwhile")
    return Status(202, serialize.record(record, operation))
