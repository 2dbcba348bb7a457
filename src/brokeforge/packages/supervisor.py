"""Supervisor: keeps long-running programs up (see `supervisor_program`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from brokeforge.packages.apt import AptServiceKind
from brokeforge.packages.base import Field, HostFacts


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

    def install_steps(self, facts: HostFacts) -> str:
        return self._with_fresh_start(super().install_steps(facts), facts)

    def update_steps(self, facts: HostFacts) -> str:
        return self._with_fresh_start(super().update_steps(facts), facts)

    def _with_fresh_start(self, steps: str, facts: HostFacts) -> str:
        # Without systemd, Debian's /etc/init.d/supervisor restart does not
        # start a supervisord that is not running (seen on Debian 12): stop
        # (if running), then start.
        if facts.has_systemd:
            return steps
        lines = [
            line
            for line in steps.splitlines()
            if not line.startswith(("bf_enable_service", "bf_service restart"))
        ]
        lines += ["bf_service stop supervisor || true", "bf_service start supervisor"]
        return "\n".join(lines) + "\n"
