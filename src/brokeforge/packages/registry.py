"""Every package kind BrokeForge knows, by name.

Adding a kind means writing its module and listing its class here.
"""

from __future__ import annotations

from django.conf import settings
from django.utils.module_loading import import_string

from brokeforge.lifecycle.errors import ActionRefused
from brokeforge.packages.base import FAMILY_NAMES, PackageKind
from brokeforge.packages.cron_task import CronTaskKind
from brokeforge.packages.deployment import DeploymentKind
from brokeforge.packages.firewall import Firewall, FirewallRuleKind
from brokeforge.packages.mariadb import MariaDB
from brokeforge.packages.monitoring import Monitoring
from brokeforge.packages.mysql import MySQL
from brokeforge.packages.nginx import Nginx
from brokeforge.packages.php import Php
from brokeforge.packages.postgresql import PostgreSQL
from brokeforge.packages.redis import Redis
from brokeforge.packages.scheduler import Scheduler
from brokeforge.packages.site import SiteKind
from brokeforge.packages.site_git import SiteRepositoryKind
from brokeforge.packages.sql_database import Database
from brokeforge.packages.supervisor import Supervisor
from brokeforge.packages.supervisor_program import SupervisorProgramKind

KINDS: dict[str, PackageKind] = {}


def register(kind: PackageKind) -> None:
    """Add a kind; its name must be new and its family one of FAMILIES."""
    if kind.name in KINDS:
        raise ValueError(f"package kind {kind.name!r} is registered twice")
    if kind.family not in FAMILY_NAMES:
        raise ValueError(f"package kind {kind.name!r}: unknown family {kind.family!r}")
    KINDS[kind.name] = kind


for _kind in (
    Redis(),
    MariaDB(),
    MySQL(),
    PostgreSQL(),
    Database(),
    Php(),
    Nginx(),
    Scheduler(),
    CronTaskKind(),
    Supervisor(),
    SupervisorProgramKind(),
    SiteKind(),
    SiteRepositoryKind(),
    DeploymentKind(),
    Firewall(),
    FirewallRuleKind(),
    Monitoring(),
):
    register(_kind)


def load_extra_kinds() -> None:
    """Kinds named in the BROKEFORGE_EXTRA_KINDS setting (dotted class paths).

    The test suite adds its fault-injection probe this way; nothing else
    sets it.
    """
    for path in getattr(settings, "BROKEFORGE_EXTRA_KINDS", ()):
        kind: PackageKind = import_string(path)()
        KINDS.setdefault(kind.name, kind)


def get_kind(name: str) -> PackageKind:
    if name not in KINDS:
        load_extra_kinds()
    try:
        return KINDS[name]
    except KeyError:
        known = ", ".join(sorted(KINDS))
        raise ActionRefused(
            f"unknown package kind {name!r}: choose one of {known}"
        ) from None
