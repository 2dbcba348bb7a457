"""The benchmark's job as a BrokeForge package kind: the same remote command
the Celery and RQ tasks run (bench/jobs.py), through the whole engine
(request, queue, worker, SSH). bench/settings.py adds it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bench.remote import remote_command
from brokeforge.lifecycle.errors import ActionRefused
from brokeforge.lifecycle.models import Action
from brokeforge.packages.base import HostFacts, PackageKind


class BenchJob(PackageKind):
    name = "benchjob"
    label = "Benchmark job"
    timeouts = {"install": 600, "update": 600, "remove": 600}
    # A plain remote command: no apt, so no package-manager lock either.
    uses_package_manager = False

    def clean_params(self, action: Action, params: Mapping[str, Any]) -> dict[str, Any]:
        mode = params.get("mode", "sleep")
        tag = params.get("tag", "job")
        seconds = params.get("seconds", 30)
        if mode not in ("sleep", "block"):
            raise ActionRefused("mode must be sleep or block")
        if not isinstance(tag, str) or not re.fullmatch(r"[a-z0-9-]{1,40}", tag):
            raise ActionRefused("tag must be 1-40 lowercase letters, digits or -")
        if not isinstance(seconds, (int, float)) or not 0 <= seconds <= 3600:
            raise ActionRefused("seconds must be a number from 0 to 3600")
        return {"mode": mode, "tag": tag, "seconds": seconds}

    def script(
        self, action: Action, facts: HostFacts, params: Mapping[str, Any]
    ) -> str:
        return remote_command(params["mode"], params["tag"], params["seconds"]) + "\n"

    def verify_script(
        self,
        action: Action,
        facts: HostFacts,
        params: Mapping[str, Any] | None = None,
    ) -> str:
        return "true\n"
