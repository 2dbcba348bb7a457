"""Sign-ins, sign-outs and refused sign-ins go to the audit log."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import (
    user_logged_in,
    user_logged_out,
    user_login_failed,
)
from django.http import HttpRequest

from brokeforge.accounts import audit
from brokeforge.accounts.actor import Actor, client_address
from brokeforge.accounts.models import AuditEntry


def connect() -> None:
    user_logged_in.connect(_signed_in, dispatch_uid="brokeforge-sign-in")
    user_logged_out.connect(_signed_out, dispatch_uid="brokeforge-sign-out")
    user_login_failed.connect(_refused, dispatch_uid="brokeforge-sign-in-refused")


def _signed_in(sender: Any, request: HttpRequest | None, user: Any, **_: Any) -> None:
    if request is not None:
        audit.record(Actor(user, "web", client_address(request)), "account.sign_in")


def _signed_out(sender: Any, request: HttpRequest | None, user: Any, **_: Any) -> None:
    if request is not None and user is not None:
        audit.record(Actor(user, "web", client_address(request)), "account.sign_out")


def _refused(
    sender: Any,
    credentials: dict[str, Any],
    request: HttpRequest | None = None,
    **_: Any,
) -> None:
    """A wrong password or an unknown name: no account acted, so the entry
    names what was typed (the password never reaches this signal's
    credentials unmasked, and is not stored)."""
    if request is None:
        return
    AuditEntry.objects.create(
        user=None,
        username=str(credentials.get("username", ""))[:150],
        via="web",
        address=client_address(request)[:64],
        action="account.sign_in",
        outcome="refused",
        detail="wrong name or password",
    )
