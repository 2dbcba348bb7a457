"""The package kind the fleet and dispatch benchmarks install.

Its install is `sleep` for the seconds asked (3 by default): what a real
install's remote side costs BrokeForge is waiting on a channel, and the
bench hosts (bench/hosts.py) play exactly that. It goes through the whole
engine like any kind: request, queue, claim, SSH, facts, script, verify.
`bench/settings.py` adds it with BROKEFORGE_EXTRA_KINDS.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from brokeforge.lifecycle.errors import InvalidOption
from brokeforge.lifecycle.models import Action
from brokeforge.packages.base import Field, HostFacts, PackageKind

DEFAULT_SECONDS = 3.0


class BenchInstall(PackageKind):
    name = "benchinstall"
    label = "Bench install"
    family = "monitoring"
    fields = (
        Field("seconds", "Seconds the install takes", required=False, default="3"),
    )
    timeouts = {"install": 120, "update": 120, "remove": 120}

    def clean_params(self, action: Action, params: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(params) - {"seconds"})
        if unknown:
            raise InvalidOption(unknown[0], "the bench install takes only seconds")
        seconds = params.get("seconds", DEFAULT_SECONDS)
        if isinstance(seconds, str):
            try:
                seconds = float(seconds)
            except ValueError:
                seconds = -1
        if not isinstance(seconds, (int, float)) or not 0 <= seconds <= 60:
            raise InvalidOption("seconds", "seconds must be a number from 0 to 60")
        return {"seconds": float(seconds)}

    def script(
        self, action: Action, facts: HostFacts, params: Mapping[str, Any]
    ) -> str:
        seconds = float(params.get("seconds", DEFAULT_SECONDS))
        return f"echo 'bench {action}: {seconds:g} s'\nsleep {seconds:g}\necho done\n"

    def verify_script(
        self,
        action: Action,
        facts: HostFacts,
        params: Mapping[str, Any] | None = None,
    ) -> str:
        return "echo bench-ok\n"
