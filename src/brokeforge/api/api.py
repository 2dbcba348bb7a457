"""The JSON API, version 1: /api/v1/ (schema at /api/v1/openapi.json, docs at
/api/v1/docs).

Errors answer `{"detail": ..., "errors": [{"field": ..., "message": ...}]}`:
400 invalid input (naming each field), 401 no or revoked token, 403 a change
that is not allowed (read-only token, another account's server seen as
staff), 404 not found or not yours, 409 refused by the record's state.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError
from ninja.errors import ValidationError as NinjaValidationError

from brokeforge.api import auth, kinds, operations, records, servers
from brokeforge.api.docs import PlainDocs
from brokeforge.lifecycle.errors import ActionRefused, InvalidOption
from brokeforge.servers.access import NotAllowed

api = NinjaAPI(
    title="BrokeForge API",
    version="1",
    description="Servers, the packages on them, and the operations that change "
    "them. Every record carries its status, error_message and its current or "
    "last operation.",
    auth=auth.AUTH,
    docs=PlainDocs(),
    urls_namespace="api-v1",
)
api.add_router("/servers", servers.router)
api.add_router("/servers", records.router)
api.add_router("/operations", operations.router)
api.add_router("/audit", operations.audit_router)
api.add_router("/kinds", kinds.router)


def _error(
    request: HttpRequest, status: int, detail: str, errors: list[Any] | None = None
) -> HttpResponse:
    return api.create_response(
        request, {"detail": detail, "errors": errors or []}, status=status
    )


@api.exception_handler(NinjaValidationError)
def _invalid(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    errors = [
        {"field": _field_name(e.get("loc", ())), "message": str(e.get("msg", ""))}
        for e in exc.errors
    ]
    fields = ", ".join(e["field"] for e in errors)
    return _error(request, 400, f"invalid input: {fields}", errors)


@api.exception_handler(DjangoValidationError)
def _refused_value(request: HttpRequest, exc: DjangoValidationError) -> HttpResponse:
    if hasattr(exc, "error_dict"):
        errors = [
            {"field": field, "message": " ".join(messages)}
            for field, messages in exc.message_dict.items()
        ]
    else:
        errors = [{"field": "__all__", "message": " ".join(exc.messages)}]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return _error(request, 400, detail, errors)


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    # The message never says whether the object exists for someone else.
    return _error(request, 404, str(exc) or "not found")


@api.exception_handler(ActionRefused)
def _refused(request: HttpRequest, exc: ActionRefused) -> HttpResponse:
    return _error(request, 409, str(exc))


@api.exception_handler(InvalidOption)
def _invalid_option(request: HttpRequest, exc: InvalidOption) -> HttpResponse:
    # A kind's option check: wrong input whatever the record's state.
    errors = [{"field": exc.field, "message": exc.message}]
    return _error(request, 400, f"{exc.field}: {exc.message}", errors)


@api.exception_handler(NotAllowed)
def _not_allowed(request: HttpRequest, exc: NotAllowed) -> HttpResponse:
    return _error(request, 403, str(exc))


@api.exception_handler(auth.ReadOnlyTokenError)
def _read_only(request: HttpRequest, exc: auth.ReadOnlyTokenError) -> HttpResponse:
    return _error(request, 403, str(exc))


@api.exception_handler(auth.TokenRevokedError)
def _revoked(request: HttpRequest, exc: auth.TokenRevokedError) -> HttpResponse:
    return _error(request, 401, str(exc))


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return _error(
        request,
        401,
        "authentication required: send 'Authorization: Bearer <token>' "
        "(brokeforge token create --name NAME)",
    )


def _field_name(loc: Any) -> str:
    # ("body", "payload", "port") -> "port"; ("query", "limit") -> "limit"
    parts = [str(p) for p in loc if p not in ("body", "payload", "query", "path")]
    return ".".join(parts) or "body"
