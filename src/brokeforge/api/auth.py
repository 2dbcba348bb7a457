"""How the API knows who calls: a personal token (Bearer) or the page's session."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja.security import HttpBearer, SessionAuth

from brokeforge.accounts import tokens

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class TokenRevokedError(Exception):
    """Answered 401: the token was revoked."""


class ReadOnlyTokenError(Exception):
    """Answered 403: a read-only token asked for a change."""


class TokenAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Any:
        address = str(request.META.get("REMOTE_ADDR") or "unknown")
        try:
            found = tokens.authenticate(token, address=address)
        except tokens.TokenRevoked as exc:
            raise TokenRevokedError(str(exc)) from None
        if found is None:
            return None
        if found.read_only and request.method not in SAFE_METHODS:
            raise ReadOnlyTokenError(
                f"token {found.name} is read-only: it cannot {request.method} "
                f"{request.path}"
            )
        request.user = found.user
        request.api_token = found  # type: ignore[attr-defined]
        return found.user


#: Token first; a signed-in browser (with its CSRF token on writes) also works.
AUTH = [TokenAuth(), SessionAuth(csrf=True)]
