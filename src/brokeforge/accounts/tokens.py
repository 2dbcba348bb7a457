"""Personal API tokens: create (secret shown once), authenticate, revoke."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from brokeforge.accounts import audit
from brokeforge.accounts.models import ApiToken

if TYPE_CHECKING:
    from brokeforge.accounts.actor import Actor

#: Every secret starts with this, so a leaked one is easy to recognise.
SECRET_PREFIX = "bf_"  # noqa: S105 (a marker, not a secret)
#: How many characters of the secret are kept in clear to tell tokens apart.
SHOWN_CHARS = 10
MAX_NAME = 64


class TokenRevoked(Exception):
    """The secret belongs to a revoked token."""


def hash_secret(secret: str) -> str:
    # The secret carries 256 random bits: a plain sha256 cannot be reversed
    # by guessing, and it lets the lookup be an indexed equality.
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    user: Any, name: str, *, read_only: bool, actor: Actor | None = None
) -> tuple[ApiToken, str]:
    """Create a token and return it with its secret (never stored in clear)."""
    name = name.strip()
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise ValidationError(
            {"name": f"give the token a name of 1 to {MAX_NAME} printable characters"}
        )
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    try:
        with transaction.atomic():
            token = ApiToken.objects.create(
                user=user,
                name=name,
                prefix=secret[:SHOWN_CHARS],
                secret_hash=hash_secret(secret),
                read_only=read_only,
            )
    except IntegrityError:
        raise ValidationError(
            {"name": f"you have a token named {name!r} already"}
        ) from None
    audit.record(actor, "token.create", target=f"token {name} ({token.scope})")
    return token, secret


def revoke_token(token: ApiToken, *, actor: Actor | None = None) -> bool:
    """Revoke a live token; False if it was revoked already."""
    changed = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    token.refresh_from_db()
    if changed:
        audit.record(actor, "token.revoke", target=f"token {token.name}")
    return bool(changed)


def live_tokens(user: Any) -> list[ApiToken]:
    return list(ApiToken.objects.filter(user=user, revoked_at__isnull=True))


#: How precisely a token's last use is kept.
LAST_USE_RESOLUTION = timedelta(minutes=1)


def authenticate(secret: str, *, address: str) -> ApiToken | None:
    """The live token with this secret (its use recorded), or None if unknown.

    Raises `TokenRevoked` for a revoked token, so the caller can say so.
    """
    if not secret.startswith(SECRET_PREFIX) or len(secret) > 200:
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(secret_hash=hash_secret(secret))
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    if token.revoked_at is not None:
        raise TokenRevoked(f"token {token.name} was revoked")
    now = timezone.now()
    address = address[:64]
    # A write per request would make every API call wait for the database's
    # write lock: the last use is recorded when it is news (another address,
    # or a minute since the one recorded).
    stale = token.last_used_at is None or (
        now - token.last_used_at >= LAST_USE_RESOLUTION
    )
    if stale or token.last_used_from != address:
        ApiToken.objects.filter(pk=token.pk).update(
            last_used_at=now, last_used_from=address
        )
        token.last_used_at, token.last_used_from = now, address
    return token
