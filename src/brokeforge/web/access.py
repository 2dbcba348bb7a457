"""Who may see which server: the one place the pages ask.

Every page and the event stream get their servers through these functions,
so the rule can change in one spot.
"""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet
from django.http import Http404

from brokeforge.servers.models import Server

# Shortcoming: every signed-in user sees every server until server owners land
# (issue 6, branch `api`, `servers.access.visible_servers`); then this module
# delegates to it.


def visible_servers(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Server]:
    """The servers `user` may see; none for an anonymous visitor."""
    if not user.is_authenticated:
        return Server.objects.none()
    return Server.objects.all()


def visible_server(user: AbstractBaseUser | AnonymousUser, name: str) -> Server:
    """The server called `name` if `user` may see it; 404 otherwise."""
    server = visible_servers(user).filter(name=name).first()
    if server is None:
        raise Http404("no such server")
    return server
