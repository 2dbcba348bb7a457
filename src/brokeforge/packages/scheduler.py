"""The cron service: what runs scheduled tasks (see `cron_task`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from brokeforge.packages.apt import AptServiceKind
from brokeforge.packages.base import Field


class Scheduler(AptServiceKind):
    name = "scheduler"
    label = "Scheduler (cron)"
    family = "scheduler"
    timeouts = {"install": 300, "update": 300, "remove": 300}
    packages = ("cron",)
    purge_packages = ("cron", "cron-daemon-common")
    service = "cron"
    data_dir = ""
    remove_fields: ClassVar[Sequence[Field]] = ()
    ping = "bf_service status cron >/dev/null 2>&1"
    version_command = "dpkg-query -W -f='${Version}\\n' cron"
