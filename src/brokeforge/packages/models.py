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


class Site(PackageRecord):
    """A website: an nginx server block, a PHP-FPM pool (for a PHP site) and
    its web root."""

    KIND = "site"

    domain = models.CharField(max_length=253)
    #: Other names it answers to, separated by spaces.
    aliases = models.CharField(max_length=1000, blank=True)
    web_root = models.CharField(max_length=255)
    #: The PHP version it runs with; empty for a static site.
    php_version = models.CharField(max_length=8, blank=True)

    class Meta:
        ordering = ["domain"]
        constraints = [
            models.UniqueConstraint(
                fields=["server", "domain"], name="one_site_per_domain"
            )
        ]


class FirewallRule(PackageRecord):
    """One ufw rule on a server (its firewall must be active)."""

    KIND = "firewall-rule"

    #: One port ("80") or an inclusive range ("8000:8100").
    port = models.CharField(max_length=11)
    protocol = models.CharField(max_length=3)
    #: "any", or a network in canonical form ("203.0.113.0/24").
    source = models.CharField(max_length=49)
    policy = models.CharField(max_length=5)

    class Meta:
        ordering = ["pk"]
        constraints = [
            # ufw itself keeps one rule per port, protocol and source: adding
            # the same one with the other policy replaces it.
            models.UniqueConstraint(
                fields=["server", "port", "protocol", "source"],
                name="one_firewall_rule_per_port_protocol_source",
            )
        ]


class SiteRepository(PackageRecord):
    """The git repository a site is deployed from, with its own deploy key."""

    KIND = "site_git"

    domain = models.CharField(max_length=253)
    url = models.CharField(max_length=500)
    branch = models.CharField(max_length=200, default="main")
    #: Shell run in the web root after each checkout; empty for none.
    deploy_script = models.TextField(blank=True)
    #: The deploy key's private half, encrypted with brokeforge.crypto.
    deploy_key_encrypted = models.TextField()
    #: What the person adds to the repository host as a read-only key.
    deploy_public_key = models.TextField()

    class Meta:
        ordering = ["domain"]
        constraints = [
            models.UniqueConstraint(
                fields=["server", "domain"], name="one_repository_per_site"
            )
        ]

    def deploy_key(self) -> str:
        return decrypt(self.deploy_key_encrypted)


class Deployment(PackageRecord):
    """One deployment of a site: fetch, check out, run the deploy script."""

    KIND = "deployment"

    domain = models.CharField(max_length=253)
    created_at = models.DateTimeField(auto_now_add=True)

    #: The line a deployment's script ends with, naming the commit.
    COMMIT_MARK = "deployed commit "

    class Meta:
        ordering = ["-id"]

    def commit(self) -> str:
        """The commit the latest successful run checked out ("" if none).

        Read from that operation's output, which is complete once it ended.
        Shortcoming: read, not stored, until the deployment's verification
        prints the commit (the runner now passes it the operation's params)
        and `after_verify` stores it.
        """
        from brokeforge.lifecycle.models import OperationState

        operation = (
            self.operations().filter(state=OperationState.SUCCEEDED).order_by("-id")
        ).first()
        if operation is None:
            return ""
        marks = [
            line.removeprefix(self.COMMIT_MARK).strip()
            for line in operation.output.splitlines()
            if line.startswith(self.COMMIT_MARK)
        ]
        return marks[-1] if marks else ""


class Monitor(PackageRecord):
    """The metrics collector on a server (one per server)."""

    KIND = "monitoring"

    #: Minutes between two samples (see packages.monitoring.INTERVALS).
    interval = models.PositiveSmallIntegerField(default=5)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["server"], name="one_monitor_per_server")
        ]


class MetricSample(models.Model):
    """One sample the collector took on a server, as BrokeForge read it."""

    server = models.ForeignKey(
        "servers.Server", on_delete=models.CASCADE, related_name="metric_samples"
    )
    taken_at = models.DateTimeField()
    #: Percent of CPU time busy, of memory used, of `/` used.
    cpu = models.FloatField()
    memory = models.FloatField()
    disk = models.FloatField()
    #: The 1-minute load average.
    load = models.FloatField()

    class Meta:
        ordering = ["taken_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["server", "taken_at"], name="one_metric_sample_per_time"
            )
        ]

    def __str__(self) -> str:
        return f"{self.server_id} {self.taken_at:%Y-%m-%d %H:%M:%S}"
