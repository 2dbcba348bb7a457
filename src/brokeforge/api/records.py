"""/api/v1/servers/{id}/records/{kind}: the packages and records on a server.

Records are addressed by kind, so every kind in `packages.registry` is
served by the same endpoints. A kind with one record per server is named by
its kind alone (`/records/redis`); a kind with many records per server
(databases, cron tasks, ...) is created at `/records/{kind}` and named by
id afterwards (`/records/{kind}/{record_id}`). A kind's options go in
`params` (see each kind's fields).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
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
from brokeforge.api.schemas import ActionIn, DataChoice, RecordOut
from brokeforge.lifecycle.errors import ActionRefused
from brokeforge.lifecycle.models import ManagedRecord
from brokeforge.packages import service
from brokeforge.packages.base import PackageKind
from brokeforge.packages.registry import KINDS
from brokeforge.servers.models import Server

router = Router(tags=["records"])

ONE = "/{server_id}/records/{kind}"
MANY = "/{server_id}/records/{kind}/{int:record_id}"


@router.get(
    "/{server_id}/records",
    response={200: list[RecordOut], **ERRORS},
    summary="Every record on a server, of every kind",
)
def list_records(request: HttpRequest, server_id: PathId) -> list[dict[str, Any]]:
    server = server_of(request, server_id)
    return [serialize.record(r) for r in service.all_records(server)]


@router.get(ONE, response={200: RecordOut, **ERRORS}, summary="A kind's record")
def get_record(request: HttpRequest, server_id: PathId, kind: str) -> dict[str, Any]:
    server = server_of(request, server_id)
    return serialize.record(_find(server, _kind(kind), None))


@router.get(MANY, response={200: RecordOut, **ERRORS}, summary="A record by id")
def get_record_by_id(
    request: HttpRequest, server_id: PathId, kind: str, record_id: PathId
) -> dict[str, Any]:
    server = server_of(request, server_id)
    return serialize.record(_find(server, _kind(kind), record_id))


@router.post(
    ONE,
    response={202: RecordOut, **WRITE_ERRORS},
    summary="Install a package, or create a record of a kind with many",
    description="Answers 202 with the record pending and its queued operation.",
)
def install(
    request: HttpRequest, server_id: PathId, kind: str, payload: ActionIn | None = None
) -> Status[Any]:
    return _act(request, server_id, kind, None, "install", _params(payload))


@router.post(
    ONE + "/update", response={202: RecordOut, **WRITE_ERRORS}, summary="Update"
)
def update(
    request: HttpRequest, server_id: PathId, kind: str, payload: ActionIn | None = None
) -> Status[Any]:
    return _act(request, server_id, kind, None, "update", _params(payload))


@router.post(
    MANY + "/update", response={202: RecordOut, **WRITE_ERRORS}, summary="Update"
)
def update_by_id(
    request: HttpRequest,
    server_id: PathId,
    kind: str,
    record_id: PathId,
    payload: ActionIn | None = None,
) -> Status[Any]:
    return _act(request, server_id, kind, record_id, "update", _params(payload))


@router.post(
    ONE + "/retry",
    response={202: RecordOut, **WRITE_ERRORS},
    summary="Repeat a failed record's last action",
)
def retry(request: HttpRequest, server_id: PathId, kind: str) -> Status[Any]:
    return _act(request, server_id, kind, None, "retry", None)


@router.post(
    MANY + "/retry",
    response={202: RecordOut, **WRITE_ERRORS},
    summary="Repeat a failed record's last action",
)
def retry_by_id(
    request: HttpRequest, server_id: PathId, kind: str, record_id: PathId
) -> Status[Any]:
    return _act(request, server_id, kind, record_id, "retry", None)


REMOVE_HELP = (
    "For packages with data, `data=keep` moves it to /var/backups/brokeforge "
    "first and `data=delete` deletes it; for a site, `files=keep` leaves its "
    "web root and `files=delete` deletes it. The record goes once the removal "
    "succeeded."
)


@router.delete(
    ONE,
    response={202: RecordOut, **WRITE_ERRORS},
    summary="Remove a package",
    description=REMOVE_HELP,
)
def remove(
    request: HttpRequest, server_id: PathId, kind: str, data: DataChoice | None = None
) -> Status[Any]:
    params = _remove_params(kind, data, None)
    return _act(request, server_id, kind, None, "remove", params)


@router.delete(
    MANY,
    response={202: RecordOut, **WRITE_ERRORS},
    summary="Remove a record",
    description=REMOVE_HELP,
)
def remove_by_id(
    request: HttpRequest,
    server_id: PathId,
    kind: str,
    record_id: PathId,
    data: DataChoice | None = None,
    files: DataChoice | None = None,
) -> Status[Any]:
    params = _remove_params(kind, data, files)
    return _act(request, server_id, kind, record_id, "remove", params)


def _kind(name: str) -> PackageKind:
    if name not in KINDS:
        raise Http404(f"no package kind {name!r}: known are {', '.join(KINDS)}")
    return KINDS[name]


def _find(server: Server, kind: PackageKind, record_id: int | None) -> ManagedRecord:
    if kind.many and record_id is None:
        raise Http404(
            f"{kind.label} has many records per server: name one by id, "
            f"/records/{kind.name}/{{record_id}}"
        )
    record = service.get_record(server, kind.name, record_id if kind.many else None)
    if record is None or (record_id is not None and record.pk != record_id):
        if record_id is None:
            raise Http404(f"{kind.label} is not installed on {server.name}")
        raise Http404(f"{kind.label} #{record_id} is not on {server.name}")
    return record


def _params(payload: ActionIn | None) -> dict[str, Any] | None:
    return payload.params if payload is not None and payload.params else None


def _remove_params(
    kind_name: str, data: str | None, files: str | None
) -> dict[str, Any] | None:
    kind = _kind(kind_name)
    needs_data = any(f.name == "data" and f.required for f in kind.remove_fields)
    if needs_data and data is None:
        raise ValidationError(
            {"data": "choose keep (move the data to a backup) or delete"}
        )
    # The kind checks what it takes (a site takes `files`, not `data`).
    given = {"data": data, "files": files}
    return {name: value for name, value in given.items() if value is not None} or None


def _act(
    request: HttpRequest,
    server_id: int,
    kind_name: str,
    record_id: int | None,
    action: str,
    params: dict[str, Any] | None,
) -> Status[Any]:
    server = server_of(request, server_id)
    kind = _kind(kind_name)
    if kind.many and record_id is None and action != "install":
        _find(server, kind, None)  # says to name the record
    operation = service.request_action(
        server,
        kind.name,
        action,
        params=params,
        record_id=record_id,
        actor=actor(request),
    )
    found = service.get_record(
        server, kind.name, operation.record_id if kind.many else None
    )
    if found is None:
        # Only a removal deletes a record, and only after it ran: a record
        # gone a moment after its request means a removal just finished.
        raise ActionRefused(f"{operation.record_label} was removed meanwhile")
    found.server = server  # the same row: spare the answer a query for it
    answer = serialize.record(found, operation)
    answer["generated_secret"] = serialize.generated_secret(found, action, params)
    return Status(202, answer)
