from __future__ import annotations

from django.db import models

from brokeforge.lifecycle.models import ManagedRecord


class Database(ManagedRecord):
    """A database server package on a server: Redis, MariaDB or MySQL."""

    kind = models.CharField(max_length=32)
    #: The version the server reported after the last install or update.
    version = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["kind"]
        constraints = [
            models.UniqueConstraint(
                fields=["server", "kind"], name="one_database_kind_per_server"
            )
        ]

    def __str__(self) -> str:
        return self.label()

    def label(self) -> str:
        from brokeforge.packages.registry import get_kind

        return f"{get_kind(self.kind).label} on {self.server.name}"

    def kind_name(self) -> str:
        return self.kind


# Kinds with a record model of their own keep it in their module; importing
# it here is what makes Django (and its migrations) see it.
from brokeforge.packages.firewall import FirewallRule  # noqa: E402

__all__ = ["Database", "FirewallRule"]
