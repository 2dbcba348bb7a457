"""What every endpoint needs: the actor, and objects looked up as the caller."""

from __future__ import annotations

from typing import Annotated, Any

from django.http import Http404, HttpRequest
from pydantic import Field as PydanticField

from brokeforge.accounts.actor import Actor
from brokeforge.api.schemas import Error
from brokeforge.servers import access
from brokeforge.servers.models import Server

#: The largest id a database key holds (signed 64-bit); larger is a 400.
MAX_ID = 2**63 - 1


#: A path id: a positive integer a database key can hold.
PathId = Annotated[int, PydanticField(ge=1, le=MAX_ID)]


#: Error answers every endpoint may give, for the schema.
ERRORS: dict[int, Any] = {400: Error, 401: Error, 403: Error, 404: Error}
WRITE_ERRORS: dict[int, Any] = {**ERRORS, 409: Error}


def actor(request: HttpRequest) -> Actor:
    return Actor.from_request(request, "api")


def server_of(request: HttpRequest, server_id: int) -> Server:
    """The server if the caller may see it; 404 otherwise (whoever owns it)."""
    server = (
        access.visible_servers(request.user)
        .select_related("owner")
        .filter(pk=server_id)
        .first()
    )
    if server is None:
        raise Http404(f"no server {server_id}")
    return server
