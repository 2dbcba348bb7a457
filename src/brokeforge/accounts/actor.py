"""Who is acting, through what, from where: passed to every service that acts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django.http import HttpRequest

    from brokeforge.accounts.models import ApiToken


@dataclass(frozen=True)
class Actor:
    #: The account acting (an authenticated Django user).
    user: Any
    #: "web", "api" or "cli".
    via: str
    #: The client's IP address, or "cli" for the local command.
    address: str
    token: ApiToken | None = None

    @classmethod
    def from_request(cls, request: HttpRequest, via: str) -> Actor:
        # Shortcoming: behind a reverse proxy this is the proxy's address,
        # until a trusted-proxy setting says which forwarded header to believe.
        return cls(
            user=request.user,
            via=via,
            address=str(request.META.get("REMOTE_ADDR") or "unknown"),
            token=getattr(request, "api_token", None),
        )

    @classmethod
    def local(cls, user: Any) -> Actor:
        return cls(user=user, via="cli", address="cli")
