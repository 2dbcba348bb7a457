"""Who may see and change which servers: the one place that decides it.

Pages, the API and the CLI ask here, never filter by owner themselves, so
organizations and roles can later change the answer in this module alone.
Today a server belongs to one account: its owner sees and changes it; staff
see every server; superusers also change every server.

Everything on a server (its records, operations, events) is visible exactly
when the server is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db.models import QuerySet

from brokeforge.servers.models import Server

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

    from brokeforge.lifecycle.models import Operation

    User = AbstractBaseUser | AnonymousUser | None


class NotAllowed(Exception):
    """The person may see the object but not change it (HTTP 403, exit 2)."""


def visible_servers(user: User) -> QuerySet[Server]:
    if user is None or not user.is_authenticated:
        return Server.objects.none()
    if getattr(user, "is_staff", False):
        return Server.objects.all()
    return Server.objects.filter(owner_id=user.pk)


def visible_operations(user: User) -> QuerySet[Operation]:
    from brokeforge.lifecycle.models import Operation

    return Operation.objects.filter(server__in=visible_servers(user))


def can_change(user: User, server: Server) -> bool:
    if user is None or not user.is_authenticated:
        return False
    return server.owner_id == user.pk or bool(getattr(user, "is_superuser", False))


def check_can_change(user: User, server: Server) -> None:
    """Raise `NotAllowed` unless `user` may change `server`."""
    if not can_change(user, server):
        raise NotAllowed(
            f"you may look at {server.name} but not change it: "
            "it belongs to another account"
        )
