from __future__ import annotations

from django.conf import settings
from django.db import models

from brokeforge import crypto
from brokeforge.servers import validators
from brokeforge.servers.keys import fingerprint
from brokeforge.servers.ssh import SSHTarget


class Server(models.Model):
    """A machine BrokeForge manages over SSH.

    The private key is stored encrypted (see `brokeforge.crypto`). The host
    key is pinned on the first successful connection; a later connection
    that meets another key is refused before anything runs.
    """

    # Shortcoming: names are unique across all accounts, so a person can learn
    # that a name is taken by someone else, until names become unique per owner
    # (with organizations, issue 6 follow-up).
    name = models.CharField(
        max_length=63, unique=True, validators=[validators.validate_server_name]
    )
    #: Who may see and change the server (see `brokeforge.servers.access`).
    #: Empty only for servers registered before accounts owned servers, on an
    #: installation that had no account yet: those are visible to staff only.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="servers",
    )
    host = models.CharField(max_length=253, validators=[validators.validate_host])
    port = models.PositiveIntegerField(
        default=22, validators=[validators.validate_port]
    )
    user = models.CharField(
        max_length=32, default="root", validators=[validators.validate_ssh_user]
    )
    private_key_encrypted = models.TextField(editable=False)
    public_key = models.TextField(editable=False)
    host_key = models.TextField(blank=True, editable=False)
    host_key_fingerprint = models.CharField(max_length=100, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def private_key(self) -> str:
        return crypto.decrypt(self.private_key_encrypted)

    def ssh_target(self) -> SSHTarget:
        return SSHTarget(
            name=self.name,
            host=self.host,
            port=self.port,
            user=self.user,
            private_key=self.private_key(),
            pinned_host_key=self.host_key,
        )

    def pin_host_key(self, host_key: str) -> None:
        """Pin `host_key` unless another key was pinned meanwhile."""
        fp = fingerprint(host_key)
        Server.objects.filter(pk=self.pk, host_key="").update(
            host_key=host_key, host_key_fingerprint=fp
        )
        self.refresh_from_db(fields=["host_key", "host_key_fingerprint"])

    def set_private_key(self, private_key: str, public_key: str) -> None:
        self.private_key_encrypted = crypto.encrypt(private_key)
        self.public_key = public_key
