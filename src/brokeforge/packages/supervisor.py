"""Supervisor: keeps long-running programs up (see `supervisor_program`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from brokeforge.packages.apt import AptServiceKind
from brokeforge.packages.base import Field


class Supervisor(AptServiceKind):
    name = "supervisor"
    label = "Supervisor"
    family = "supervisor"
    timeouts = {"install": 300, "update": 300, "remove": 300}
    packages = ("supervisor",)
    purge_packages = ("supervisor",)
    service = "supervisor"
    data_dir = ""
    remove_fields: ClassVar[Sequence[Field]] = ()
    # `supervisorctl pid` answers only when supervisord does (`status` would
    # also fail for any stopped program).
    ping = "supervisorctl pid >/dev/null 2>&1"
    version_command = "supervisord --version"
