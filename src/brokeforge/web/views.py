"""The pages: each view parses the request, calls a service, renders or redirects."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import django_htmx
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from brokeforge.accounts import audit
from brokeforge.accounts.actor import Actor, client_address
from brokeforge.lifecycle.errors import ActionRefused, InvalidOption, OperationFailure
from brokeforge.lifecycle.machine import refusal
from brokeforge.lifecycle.models import Action, Operation
from brokeforge.packages import monitoring
from brokeforge.packages.base import Field, PackageKind
from brokeforge.packages.registry import KINDS
from brokeforge.packages.service import cancel_operation, request_action
from brokeforge.servers import access
from brokeforge.servers.access import NotAllowed
from brokeforge.servers.models import Server
from brokeforge.servers.service import (
    add_server,
    adopt_ownerless_servers,
    check_server,
    remove_server,
)
from brokeforge.web.access import visible_server, visible_servers
from brokeforge.web.display import (
    ACTION_ORDER,
    FamilySection,
    FormEntry,
    family_sections,
    kind_section,
    operations_of,
    row_by_key,
    row_key,
    status_counts,
    waiting_text,
    with_create_errors,
)
from brokeforge.web.events import latest_event_id
from brokeforge.web.forms import ServerForm

#: How many operations the server page lists; the operations page has more.
RECENT_OPERATIONS = 20
#: How many operations the operations page lists.
OPERATIONS_PAGE = 200


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
            audit.record(
                Actor(user, "web", client_address(request)),
                "account.create",
                target=user.get_username(),
            )
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
    visible = visible_servers(request.user).select_related("owner")
    counts = status_counts(visible)
    servers = [(server, counts.get(server.pk, [])) for server in visible]
    return render(request, "web/server_list.html", {"servers": servers, "form": form})


@login_required
@require_GET
def server_detail(request: HttpRequest, name: str) -> HttpResponse:
    server = visible_server(request.user, name)
    # Read the event mark before the rows: a change committed in between is
    # then sent again by the stream, never lost.
    after = latest_event_id()
    return _render_server(request, server, family_sections(server), after=after)


def _render_server(
    request: HttpRequest,
    server: Server,
    families: list[FamilySection],
    *,
    after: int | None = None,
    status: int = 200,
) -> HttpResponse:
    context = {
        "server": server,
        "families": families,
        "metrics_chart": monitoring.chart(server),
        "operations": _recent_operations(server),
        "after": latest_event_id() if after is None else after,
    }
    return render(request, "web/server_detail.html", context, status=status)


@login_required
@require_GET
def record_row(request: HttpRequest, name: str, key: str) -> HttpResponse:
    """One record's table row, re-rendered when its event arrives."""
    server = visible_server(request.user, name)
    row = row_by_key(server, key)
    if row is None:
        raise Http404("no such row")
    context = {"server": server, "row": row}
    return render(request, "web/_record_row.html", context)


@login_required
@require_GET
def kind_table(request: HttpRequest, name: str, kind: str) -> HttpResponse:
    """A kind's table of records, re-rendered when one appears or goes."""
    server = visible_server(request.user, name)
    if kind not in KINDS or not KINDS[kind].many:
        raise Http404("no such kind with many records")
    context = {"server": server, "section": kind_section(server, KINDS[kind])}
    return render(request, "web/_kind_table.html", context)


@login_required
@require_GET
def server_operations_table(request: HttpRequest, name: str) -> HttpResponse:
    server = visible_server(request.user, name)
    context = {"server": server, "operations": _recent_operations(server)}
    return render(request, "web/partials/operations_table.html", context)


@login_required
@require_GET
def server_operations(request: HttpRequest, name: str) -> HttpResponse:
    """Every operation on a server, or on one of its rows (`?row=db-redis`)."""
    server = visible_server(request.user, name)
    key = request.GET.get("row", "")
    row = row_by_key(server, key) if key else None
    if key and row is None:
        raise Http404("no such row")
    operations = operations_of(server, key).select_related("requested_by")
    context = {
        "server": server,
        "row": row,
        "operations": operations[:OPERATIONS_PAGE],
        "limit": OPERATIONS_PAGE,
    }
    return render(request, "web/server_operations.html", context)


def _recent_operations(server: Server) -> list[Operation]:
    operations = server.operations.select_related("requested_by").order_by("-id")
    return list(operations[:RECENT_OPERATIONS])


@login_required
@require_POST
def server_check(request: HttpRequest, name: str) -> HttpResponse:
    server = visible_server(request.user, name)
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
    server = visible_server(request.user, name)
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
    server = visible_server(request.user, name)
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
@require_http_methods(["GET", "POST"])
def database_action(
    request: HttpRequest, name: str, kind: str, action: str
) -> HttpResponse:
    """Ask for install (create), update, remove or retry; a refusal changes nothing.

    For a kind with many records this URL only creates one; the others are
    named by `record_action`.
    """
    return _act(request, name, kind, action, None)


@login_required
@require_http_methods(["GET", "POST"])
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
    server = visible_server(request.user, name)
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
    """Act on a kind or record. Remove is destructive, so it takes a confirm
    step: GET (or a POST without `confirm`) shows what it will do and asks
    for the remove options; only the confirmed POST acts."""
    server = visible_server(request.user, name)
    if kind_name not in KINDS or action not in ACTION_ORDER:
        raise Http404("no such package kind or action")
    kind = KINDS[kind_name]
    if action == "remove":
        return _remove(request, server, kind, record_id)
    if request.method == "GET":
        return redirect("server-detail", name=server.name)
    if action == "install" and kind.many:
        return _create(request, server, kind)
    try:
        operation = request_action(
            server,
            kind_name,
            action,
            params=_posted_params(request, kind, action),
            record_id=record_id,
            actor=_actor(request),
        )
    except InvalidOption as exc:
        # Shortcoming: a refused update option is named in the page's message,
        # not shown next to its input, until record rows carry form errors
        # (the update forms offer only choices and checkboxes meanwhile).
        label = _field_label(kind.update_fields, exc.field)
        messages.error(request, f"Refused: {label}: {exc.message}")
    except (ActionRefused, NotAllowed) as exc:
        messages.error(request, f"Refused: {exc}")
    else:
        _say_requested(request, kind, action, operation)
    return redirect("server-detail", name=server.name)


def _create(request: HttpRequest, server: Server, kind: PackageKind) -> HttpResponse:
    """Create a record from a kind's form; errors go back next to the fields."""
    errors = _field_errors(kind.fields, request.POST)
    if not errors:
        try:
            operation = request_action(
                server,
                kind.name,
                "install",
                params=_posted_params(request, kind, "install"),
                actor=_actor(request),
            )
        except (ActionRefused, NotAllowed) as exc:
            errors = _refusal_errors(kind.fields, exc)
        else:
            _say_requested(request, kind, "install", operation)
            return redirect("server-detail", name=server.name)
    entries = tuple(
        FormEntry(
            field,
            # A secret is never sent back to the browser.
            "" if field.secret else request.POST.get(field.name, ""),
            tuple(errors.get(field.name, [])),
        )
        for field in kind.fields
    )
    families = with_create_errors(
        family_sections(server), kind.name, entries, tuple(errors.get("", []))
    )
    return _render_server(request, server, families, status=400)


def _remove(
    request: HttpRequest, server: Server, kind: PackageKind, record_id: int | None
) -> HttpResponse:
    key = row_key(kind.name, record_id or 0)
    row = row_by_key(server, key)
    if row is None:
        raise Http404("no such record")
    why = refusal(row.record, Action.REMOVE)
    if why:
        messages.error(request, f"Refused: {why}")
        return redirect("server-detail", name=server.name)
    confirmed = request.method == "POST" and "confirm" in request.POST
    errors = _field_errors(kind.remove_fields, request.POST) if confirmed else {}
    if confirmed and not errors:
        try:
            operation = request_action(
                server,
                kind.name,
                "remove",
                params=_posted_params(request, kind, "remove"),
                record_id=record_id,
                actor=_actor(request),
            )
        except (ActionRefused, NotAllowed) as exc:
            errors = _refusal_errors(kind.remove_fields, exc)
        else:
            _say_requested(request, kind, "remove", operation)
            return redirect("server-detail", name=server.name)
    fields = [
        (field, request.POST.get(field.name, ""), errors.get(field.name, []))
        for field in kind.remove_fields
    ]
    context = {
        "server": server,
        "row": row,
        "fields": fields,
        "errors": errors.get("", []),
        "url": request.path,
    }
    status = 400 if errors else 200
    return render(request, "web/confirm_remove.html", context, status=status)


def _refusal_errors(
    fields: Sequence[Field], exc: ActionRefused | NotAllowed
) -> dict[str, list[str]]:
    """A refusal as form errors: an option the form shows gets its message
    next to it; anything else goes on top of the form."""
    if isinstance(exc, InvalidOption) and any(f.name == exc.field for f in fields):
        return {exc.field: [exc.message]}
    return {"": [str(exc)]}


def _field_label(fields: Sequence[Field], name: str) -> str:
    return next((f.label for f in fields if f.name == name), name)


def _field_errors(fields: Sequence[Field], posted: QueryDict) -> dict[str, list[str]]:
    """What a person must fix in a form, by field name, before it is sent on.

    Only what the form itself can tell (a missing answer, an answer not on
    offer); the kind's `clean_params` still validates everything.
    """
    errors: dict[str, list[str]] = {}
    for field in fields:
        value = posted.get(field.name, "")
        if field.boolean:
            continue
        if field.required and not value:
            verb = "Choose" if field.choices else "Enter"
            errors[field.name] = [f"{verb} {field.label.lower()}."]
        elif value and field.choices and value not in dict(field.choices):
            offered = ", ".join(v for v, _ in field.choices)
            errors[field.name] = [f"{value!r} is not one of: {offered}."]
    return errors


def _say_requested(
    request: HttpRequest, kind: PackageKind, action: str, operation: Operation
) -> None:
    what = kind.verb(operation.action).capitalize()
    if action == "retry":
        what = f"Retry ({kind.verb(operation.action)})"
    messages.success(
        request,
        f"{what} of {operation.record_label} requested "
        f"(operation #{operation.pk}, attempt {operation.attempt}).",
    )


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
    operation = _visible_operation(request, pk)
    context = {
        "operation": operation,
        "position": operation.output_dropped + len(operation.output),
        "waiting": waiting_text(operation),
    }
    return render(request, "web/operation_detail.html", context)


@login_required
@require_GET
def operation_output(request: HttpRequest, pk: int) -> HttpResponse:
    """The output after `?offset=` (a position in the whole stream), for the tail.

    While the operation runs, the answer ends with the element that asks for
    the next part; once it ended, it also refreshes the summary.
    """
    operation = _visible_operation(request, pk)
    try:
        offset = max(0, int(request.GET.get("offset", "0")))
    except ValueError:
        return HttpResponse("offset must be a whole number\n", status=400)
    dropped = operation.output_dropped
    skipped = max(0, dropped - offset)
    context = {
        "operation": operation,
        "text": operation.output[max(0, offset - dropped) :],
        "skipped": skipped,
        "position": dropped + len(operation.output),
        "waiting": waiting_text(operation),
    }
    return render(request, "web/partials/output_tail.html", context)


@login_required
@require_POST
def operation_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    """Cancel a queued or running operation; a finished one is refused."""
    operation = _visible_operation(request, pk)
    try:
        cancelled = cancel_operation(operation, actor=_actor(request))
    except (ActionRefused, NotAllowed) as exc:
        messages.error(request, f"Refused: {exc}")
    else:
        if cancelled.is_finished:
            messages.success(request, f"Cancelled {cancelled.describe()}.")
        else:
            messages.success(
                request,
                f"Cancelling {cancelled.describe()}: its remote commands are "
                "being stopped.",
            )
    if request.POST.get("back") == "operation":
        return redirect("operation-detail", pk=pk)
    return redirect("server-detail", name=operation.server.name)


def _actor(request: HttpRequest) -> Actor:
    return Actor.from_request(request, "web")


def _visible_operation(request: HttpRequest, pk: int) -> Operation:
    operations = access.visible_operations(request.user).select_related(
        "server", "requested_by"
    )
    return get_object_or_404(operations, pk=pk)


_STATIC = {
    "htmx.js": "htmx-2.min.js",
    "htmx-sse.js": "ext/hx-sse-2.min.js",
}


@require_GET
def static_file(request: HttpRequest, name: str) -> HttpResponse:
    """htmx and its SSE extension, as django-htmx ships them (no build step)."""
    if name not in _STATIC:
        raise Http404("no such file")
    path = Path(django_htmx.__file__).parent / "static/django_htmx" / _STATIC[name]
    response = HttpResponse(path.read_bytes(), content_type="text/javascript")
    response["Cache-Control"] = "public, max-age=86400"
    return response
