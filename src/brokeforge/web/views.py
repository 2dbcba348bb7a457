"""The pages: each view parses the request, calls a service, renders or redirects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from brokeforge.accounts import audit
from brokeforge.accounts.actor import Actor
from brokeforge.lifecycle.errors import ActionRefused, OperationFailure
from brokeforge.packages.base import Field, PackageKind
from brokeforge.packages.registry import KINDS
from brokeforge.packages.service import request_action
from brokeforge.servers import access
from brokeforge.servers.access import NotAllowed
from brokeforge.servers.models import Server
from brokeforge.servers.service import (
    add_server,
    adopt_ownerless_servers,
    check_server,
    remove_server,
)
from brokeforge.web.display import (
    ACTION_ORDER,
    DATA_CHOICES,
    database_rows,
    family_sections,
    status_counts,
)
from brokeforge.web.forms import ServerForm


@require_http_methods(["GET", "POST"])
def first_run(request: HttpRequest) -> HttpResponse:
    """Create the first account and sign it in; gone once any account exists."""
    users = get_user_model()
    if users.objects.exists():
        return redirect("login")
    form: UserCreationForm[User] = UserCreationForm(
        request.POST if request.method == "POST" else None
    )
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            # Two people racing through setup: only the first one gets in.
            if users.objects.exists():
                return redirect("login")
            user = form.save(commit=False)
            user.is_staff = user.is_superuser = True
            user.save()
            adopt_ownerless_servers(user)
        login(request, user)
        messages.success(request, f"Welcome, {user.get_username()}. Add a server.")
        return redirect("server-list")
    return render(request, "web/first_run.html", {"form": form})


@login_required
@require_http_methods(["GET", "POST"])
def server_list(request: HttpRequest) -> HttpResponse:
    form = ServerForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            server = add_server(
                data["name"],
                data["host"],
                port=data["port"],
                user=data["user"],
                private_key=data["private_key"],
                actor=_actor(request),
            )
        except ValidationError as exc:
            form.add_service_errors(exc)
        else:
            messages.success(
                request,
                f"Added {server.name}. Authorize its public key on the server, "
                "then run Check connection.",
            )
            return redirect("server-detail", name=server.name)
    visible = access.visible_servers(request.user).select_related("owner")
    counts = status_counts(visible)
    servers = [(server, counts.get(server.pk, [])) for server in visible]
    return render(request, "web/server_list.html", {"servers": servers, "form": form})


@login_required
@require_GET
def server_detail(request: HttpRequest, name: str) -> HttpResponse:
    server = _server(request, name)
    operations = server.operations.select_related("requested_by").order_by("-id")
    context = {
        "server": server,
        "rows": database_rows(server),
        "families": family_sections(server),
        "operations": operations[:20],
        "data_choices": DATA_CHOICES,
        "can_change": access.can_change(request.user, server),
    }
    return render(request, "web/server_detail.html", context)


@login_required
@require_POST
def server_check(request: HttpRequest, name: str) -> HttpResponse:
    server = _server(request, name)
    try:
        host_key_fingerprint = check_server(server, actor=_actor(request))
    except NotAllowed as exc:
        messages.error(request, f"Refused: {exc}")
    except OperationFailure as exc:
        messages.error(request, f"Connection check failed: {exc.message}")
    else:
        messages.success(
            request,
            f"Connected to {server.name}; host key {host_key_fingerprint}.",
        )
    return redirect("server-detail", name=server.name)


@login_required
@require_POST
def server_repin(request: HttpRequest, name: str) -> HttpResponse:
    """Pin the key the server presents now (after a reinstall)."""
    server = _server(request, name)
    previous = server.host_key_fingerprint or "none"
    try:
        host_key_fingerprint = check_server(server, repin=True, actor=_actor(request))
    except NotAllowed as exc:
        messages.error(request, f"Refused: {exc}")
    except OperationFailure as exc:
        messages.error(request, f"Pinning a new host key failed: {exc.message}")
    else:
        messages.success(
            request,
            f"Pinned {server.name}'s host key {host_key_fingerprint} "
            f"(before: {previous}).",
        )
    return redirect("server-detail", name=server.name)


@login_required
@require_POST
def server_remove(request: HttpRequest, name: str) -> HttpResponse:
    server = _server(request, name)
    try:
        remove_server(server, actor=_actor(request))
    except (ActionRefused, NotAllowed) as exc:
        messages.error(request, f"Refused: {exc}")
        return redirect("server-detail", name=server.name)
    messages.success(
        request, f"Removed {name} from BrokeForge; nothing was changed on the server."
    )
    return redirect("server-list")


@login_required
@require_POST
def database_action(
    request: HttpRequest, name: str, kind: str, action: str
) -> HttpResponse:
    """Ask for install (create), update, remove or retry; a refusal changes nothing.

    For a kind with many records this URL only creates one; the others are
    named by `record_action`.
    """
    return _act(request, name, kind, action, None)


@login_required
@require_POST
def record_action(
    request: HttpRequest, name: str, kind: str, record_id: int, action: str
) -> HttpResponse:
    """Update, remove or retry one record of a kind with many records."""
    return _act(request, name, kind, action, record_id)


@login_required
@require_POST
def record_secret(
    request: HttpRequest, name: str, kind: str, record_id: int
) -> HttpResponse:
    """Show a record's secret (a database user's password) on request.

    POST only, and the page says not to be cached: it is never in a link, a
    log line or a message stored in the session.
    """
    server = _server(request, name)
    if kind not in KINDS:
        raise Http404("no such package kind")
    if not access.can_change(request.user, server):
        # Staff may look at another account's server, not read its secrets.
        raise PermissionDenied("only the server's owner may read its secrets")
    package = KINDS[kind]
    record = package.records(server).filter(pk=record_id).first()
    secret = package.secret(record) if record is not None else ""
    if record is None or not secret:
        raise Http404("no such record, or it has no secret")
    audit.record(_actor(request), "record.secret", server=server, target=record.label())
    response = render(
        request,
        "web/record_secret.html",
        {"server": server, "record": record, "secret": secret},
    )
    response["Cache-Control"] = "no-store"
    return response


def _act(
    request: HttpRequest, name: str, kind_name: str, action: str, record_id: int | None
) -> HttpResponse:
    server = _server(request, name)
    if kind_name not in KINDS or action not in ACTION_ORDER:
        raise Http404("no such package kind or action")
    kind = KINDS[kind_name]
    try:
        operation = request_action(
            server,
            kind_name,
            action,
            params=_posted_params(request, kind, action),
            record_id=record_id,
            actor=_actor(request),
        )
    except (ActionRefused, NotAllowed) as exc:
        messages.error(request, f"Refused: {exc}")
    else:
        what = kind.verb(operation.action).capitalize()
        if action == "retry":
            what = f"Retry ({kind.verb(operation.action)})"
        messages.success(
            request,
            f"{what} of {operation.record_label} requested "
            f"(operation #{operation.pk}, attempt {operation.attempt}).",
        )
    return redirect("server-detail", name=server.name)


def _posted_params(
    request: HttpRequest, kind: PackageKind, action: str
) -> dict[str, Any] | None:
    """The options the kind declares for `action`, as the form sent them."""
    fields: Sequence[Field] = ()
    if action == "install" and kind.many:
        fields = kind.fields
    elif action == "update":
        fields = kind.update_fields
    elif action == "remove":
        fields = kind.remove_fields
    params: dict[str, Any] = {}
    for field in fields:
        if field.boolean:
            params[field.name] = field.name in request.POST
            continue
        value = request.POST.get(field.name, "")
        if value or field.required:
            params[field.name] = value
    return params or None


@login_required
@require_GET
def operation_detail(request: HttpRequest, pk: int) -> HttpResponse:
    operation = get_object_or_404(
        access.visible_operations(request.user).select_related(
            "server", "requested_by"
        ),
        pk=pk,
    )
    return render(request, "web/operation_detail.html", {"operation": operation})


def _actor(request: HttpRequest) -> Actor:
    return Actor.from_request(request, "web")


def _server(request: HttpRequest, name: str) -> Server:
    """The server if this person may see it; 404 whether it exists or not."""
    return get_object_or_404(
        access.visible_servers(request.user).select_related("owner"), name=name
    )
