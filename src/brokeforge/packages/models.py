from __future__ import annotations

from django.db import models

from brokeforge.crypto import decrypt, encrypt
from brokeforge.lifecycle.models import ManagedRecord
from brokeforge.packages.base import PackageRecord


class Database(ManagedRecord):
    """A one-per-server package on a server (Redis, MariaDB, MySQL, PostgreSQL,
    and the services of other kinds that keep no fields of their own)."""

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


class SqlDatabase(PackageRecord):
    """A database inside a MySQL, MariaDB or PostgreSQL server on a server,
    with (optionally) a user that has every privilege on it."""

    KIND = "database"

    #: The database server kind it lives in: mariadb, mysql or postgresql.
    engine = models.CharField(max_length=32)
    name = models.CharField(max_length=64)
    #: The user created with it; empty for none.
    user = models.CharField(max_length=32, blank=True)
    #: The user's password, encrypted with brokeforge.crypto.
    password_encrypted = models.TextField(blank=True)

    class Meta:
        ordering = ["engine", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["server", "engine", "name"], name="one_database_name_per_engine"
            ),
            models.UniqueConstraint(
                fields=["server", "engine", "user"],
                condition=~models.Q(user=""),
                name="one_database_user_per_engine",
            ),
        ]

    def set_password(self, password: str) -> None:
        self.password_encrypted = encrypt(password) if password else ""

    def password(self) -> str:
        return decrypt(self.password_encrypted) if self.password_encrypted else ""


class PhpVersion(PackageRecord):
    """One PHP version (FPM and the common extensions) on a server."""

    KIND = "php"

    version = models.CharField(max_length=8)
    #: Whether `php` on the command line runs this version.
    default_cli = models.BooleanField(default=False)

    class Meta:
        ordering = ["version"]
        constraints = [
            models.UniqueConstraint(
                fields=["server", "version"], name="one_php_version_per_server"
            )
        ]


class CronTask(PackageRecord):
    """A scheduled task: one file under /etc/cron.d that BrokeForge owns."""

    KIND = "cron_task"

    name = models.CharField(max_length=64)
    #: A preset (@daily...) or a five-field cron expression.
    schedule = models.CharField(max_length=100)
    user = models.CharField(max_length=32)
    command = models.TextField()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["server", "name"], name="one_cron_task_name_per_server"
            )
        ]


class SupervisorProgram(PackageRecord):
    """A program supervisor keeps running: one file under
    /etc/supervisor/conf.d that BrokeForge owns."""

    KIND = "supervisor_program"

    name = models.CharField(max_length=64)
    command = models.TextField()
    directory = models.CharField(max_length=255)
    user = models.CharField(max_length=32)
    numprocs = models.PositiveSmallIntegerField(default=1)
    autostart = models.BooleanField(default=True)
    #: true, false or unexpected (restart only after an unexpected exit).
    autorestart = models.CharField(max_length=16, default="true")
    stopsignal = models.CharField(max_length=8, default="TERM")
    stopwaitsecs = models.PositiveIntegerField(default=10)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["server", "name"], name="one_supervisor_program_per_server"
            )
        ]
