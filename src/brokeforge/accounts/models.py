"""Personal API tokens and the audit log of what people and tokens did."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class ApiToken(models.Model):
    """A personal token for the API; only a hash of its secret is stored.

    The secret is shown once, when the token is created. A revoked token is
    kept (with `revoked_at`) so the audit log can still name it.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=64)
    #: The first characters of the secret, to tell tokens apart in lists.
    prefix = models.CharField(max_length=16)
    #: sha256 of the whole secret, hex.
    secret_hash = models.CharField(max_length=64, unique=True)
    read_only = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_from = models.CharField(max_length=64, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "name"],
                condition=Q(revoked_at__isnull=True),
                name="one_live_token_name_per_user",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def scope(self) -> str:
        return "read-only" if self.read_only else "read-write"


class AuditEntry(models.Model):
    """One thing a person or a token did (or was refused), and from where."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    #: The account's name when it acted, kept if the account goes.
    username = models.CharField(max_length=150)
    token = models.ForeignKey(
        ApiToken, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    token_name = models.CharField(max_length=64, blank=True)
    #: "web", "api" or "cli".
    via = models.CharField(max_length=8)
    #: The client's IP address for the web and the API; "cli" locally.
    address = models.CharField(max_length=64)
    #: A stable name of what was done: "server.add", "record.install", ...
    action = models.CharField(max_length=32)
    server = models.ForeignKey(
        "servers.Server", null=True, on_delete=models.SET_NULL, related_name="+"
    )
    server_name = models.CharField(max_length=63, blank=True)
    #: What it was done to, as a person names it ("Redis on web-1").
    target = models.CharField(max_length=200, blank=True)
    operation = models.ForeignKey(
        "lifecycle.Operation", null=True, on_delete=models.SET_NULL, related_name="+"
    )
    #: "done", "refused" (nothing changed) or "failed" (e.g. a check).
    outcome = models.CharField(max_length=8, default="done")
    #: Why it was refused, or what was chosen (e.g. the data choice).
    detail = models.TextField(blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["server", "-id"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.username} {self.action}"
