"""Writing and reading the audit log."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.db.models import Q, QuerySet

from brokeforge.accounts.models import AuditEntry
from brokeforge.servers import access

if TYPE_CHECKING:
    from brokeforge.accounts.actor import Actor
    from brokeforge.lifecycle.models import Operation
    from brokeforge.servers.models import Server

logger = logging.getLogger(__name__)


def record(
    actor: Actor | None,
    action: str,
    *,
    server: Server | None = None,
    target: str = "",
    operation: Operation | None = None,
    outcome: str = "done",
    detail: str = "",
) -> AuditEntry | None:
    """Write one entry; nothing when no actor is known (internal calls, tests)."""
    if actor is None:
        return None
    # Refusals quote what the person typed; PostgreSQL text holds no NUL.
    target, detail = _printable(target), _printable(detail)
    entry = AuditEntry.objects.create(
        user=actor.user,
        username=actor.user.get_username(),
        token=actor.token,
        token_name=actor.token.name if actor.token else "",
        via=actor.via,
        address=actor.address[:64],
        action=action,
        server=server if server is not None and server.pk else None,
        server_name=server.name if server is not None else "",
        target=target[:200],
        operation=operation,
        outcome=outcome,
        detail=detail,
    )
    logger.info(
        "%s %s %s by %s via %s",
        action,
        target or (server.name if server else ""),
        outcome,
        entry.username,
        actor.via,
        extra={"action": "audit", "audit_action": action, "audit_id": entry.pk},
    )
    return entry


def _printable(text: str) -> str:
    return text.replace("\x00", "\\0")


def visible_entries(user: Any) -> QuerySet[AuditEntry]:
    """What `user` may read: their own actions and those on their servers."""
    entries = AuditEntry.objects.select_related("operation")
    if user is None or not user.is_authenticated:
        return entries.none()
    if user.is_staff:
        return entries.all()
    return entries.filter(
        Q(user_id=user.pk) | Q(server__in=access.visible_servers(user))
    )
