"""/api/v1/servers: register, list, change, remove and check servers."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router, Status

from brokeforge.api import serialize
from brokeforge.api.common import (
    ERRORS,
    WRITE_ERRORS,
    PathId,
    actor,
    server_of,
)
from brokeforge.api.schemas import CheckIn, CheckOut, ServerChange, ServerIn, ServerOut
from brokeforge.lifecycle.errors import OperationFailure
from brokeforge.servers import access, service

router = Router(tags=["servers"])


@router.get("", response={200: list[ServerOut], **ERRORS}, summary="List servers")
def list_servers(request: HttpRequest) -> list[dict[str, Any]]:
    servers = access.visible_servers(request.user).select_related("owner")
    return [serialize.server(s) for s in servers]


@router.post("", response={201: ServerOut, **WRITE_ERRORS}, summary="Register a server")
def add_server(request: HttpRequest, payload: ServerIn) -> Status[Any]:
    server = service.add_server(
        payload.name,
        payload.host,
        port=payload.port,
        user=payload.user,
        private_key=payload.private_key,
        actor=actor(request),
    )
    return Status(201, serialize.server(server))


@router.get("/{server_id}", response={200: ServerOut, **ERRORS}, summary="A server")
def get_server(request: HttpRequest, server_id: PathId) -> dict[str, Any]:
    return serialize.server(server_of(request, server_id))


@router.patch(
    "/{server_id}",
    response={200: ServerOut, **WRITE_ERRORS},
    summary="Rename a server or change how it is reached",
)
def change_server(
    request: HttpRequest, server_id: PathId, payload: ServerChange
) -> dict[str, Any]:
    server = server_of(request, server_id)
    changes = payload.dict(exclude_none=True)
    service.change_server(server, changes, actor=actor(request))
    return serialize.server(server)


@router.delete(
    "/{server_id}",
    response={204: None, **WRITE_ERRORS},
    summary="Forget a server and its records (nothing runs on it)",
)
def remove_server(request: HttpRequest, server_id: PathId) -> Status[Any]:
    service.remove_server(server_of(request, server_id), actor=actor(request))
    return Status(204, None)


@router.post(
    "/{server_id}/check",
    response={200: CheckOut, **WRITE_ERRORS},
    summary="Connect and pin the host key",
    description="A failed connection answers 200 with ok false and the reason.",
)
def check_server(
    request: HttpRequest, server_id: PathId, payload: CheckIn | None = None
) -> dict[str, Any]:
    server = server_of(request, server_id)
    repin = payload.repin if payload is not None else False
    try:
        fingerprint = service.check_server(server, repin=repin, actor=actor(request))
    except OperationFailure as exc:
        return {
            "ok": False,
            "server": serialize.server(server),
            "host_key_fingerprint": server.host_key_fingerprint or None,
            "error_message": exc.message,
        }
    return {
        "ok": True,
        "server": serialize.server(server),
        "host_key_fingerprint": fingerprint,
        "error_message": "",
    }
