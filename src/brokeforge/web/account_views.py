"""The pages about the person: their API tokens and the audit log."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from brokeforge.accounts import audit, tokens
from brokeforge.accounts.actor import Actor
from brokeforge.accounts.models import ApiToken
from brokeforge.web.forms import TokenForm

AUDIT_PAGE_SIZE = 200


@login_required
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    """List the person's live tokens; create one and show its secret once."""
    form = TokenForm(request.POST if request.method == "POST" else None)
    secret = None
    if request.method == "POST" and form.is_valid():
        try:
            token, secret = tokens.create_token(
                request.user,
                form.cleaned_data["name"],
                read_only=form.cleaned_data["read_only"],
                actor=Actor.from_request(request, "web"),
            )
        except ValidationError as exc:
            form.add_service_errors(exc)
        else:
            messages.success(
                request,
                f"Created token {token.name} ({token.scope}). Copy it now: "
                "it is not shown again.",
            )
            form = TokenForm()
    context = {
        "form": form,
        "secret": secret,
        "tokens": tokens.live_tokens(request.user),
    }
    # The secret is in this answer only: keep it out of caches.
    response = render(request, "web/tokens.html", context)
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=pk, user_id=request.user.pk)
    if tokens.revoke_token(token, actor=Actor.from_request(request, "web")):
        messages.success(request, f"Revoked token {token.name}.")
    else:
        messages.info(request, f"Token {token.name} was revoked already.")
    return redirect("token-list")


@login_required
@require_GET
def audit_log(request: HttpRequest) -> HttpResponse:
    entries = audit.visible_entries(request.user)[:AUDIT_PAGE_SIZE]
    return render(request, "web/audit.html", {"entries": entries})
