"""Which servers the pages may show: `brokeforge.servers.access` decides.

Every page and the event stream get their servers through these functions;
the rule itself (owners, staff) lives in `servers.access`, shared with the
API and the CLI.
"""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet
from django.http import Http404

from brokeforge.servers import access
from brokeforge.servers.models import Server


def visible_servers(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Server]:
    """The servers `user` may see; none for an anonymous visitor."""
    return access.visible_servers(user)


def visible_server(user: AbstractBaseUser | AnonymousUser, name: str) -> Server:
    """The server called `name` if `user` may see it; 404 otherwise (whether
    it exists for someone else or not at all)."""
    server = visible_servers(user).select_related("owner").filter(name=name).first()
    if server is None:
        raise Http404("no such server")
    return server
