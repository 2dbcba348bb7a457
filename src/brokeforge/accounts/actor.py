"""Who is acting, through what, from where: passed to every service that acts."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address
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
        return cls(
            user=request.user,
            via=via,
            address=client_address(request),
            token=getattr(request, "api_token", None),
        )

    @classmethod
    def local(cls, user: Any) -> Actor:
        return cls(user=user, via="cli", address="cli")


def client_address(request: HttpRequest) -> str:
    """The address the request came from, seen through trusted proxies.

    `X-Forwarded-For` is believed only as far as it was written by the
    proxies named in BROKEFORGE_TRUSTED_PROXIES: reading from the right, the
    first address that is not a trusted proxy is the client. Anyone can send
    the header, so without that setting it is ignored.
    """
    from django.conf import settings

    remote = str(request.META.get("REMOTE_ADDR") or "unknown")
    trusted: list[IPv4Network | IPv6Network] = settings.BROKEFORGE_TRUSTED_PROXIES
    if not trusted or not _within(remote, trusted):
        return remote
    forwarded = str(request.META.get("HTTP_X_FORWARDED_FOR") or "")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _within(hop, trusted):
            return hop[:64] if _is_address(hop) else remote
    return remote


def _is_address(text: str) -> bool:
    try:
        ip_address(text)
    except ValueError:
        return False
    return True


def _within(address: str, networks: list[IPv4Network | IPv6Network]) -> bool:
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)
