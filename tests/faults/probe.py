"""A package kind for fault injection: a real script on the real host that
takes as long as the test asks, and logs when it started and ended.

It runs through the whole engine (request, queue, runner, SSH, verify), so
what a fault does to it is what it would do to Redis; only the script's
body differs. tests/settings.py adds it with BROKEFORGE_EXTRA_KINDS.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from brokeforge.lifecycle.errors import ActionRefused
from brokeforge.lifecycle.models import Action, Operation
from brokeforge.packages.base import HostFacts, PackageKind

#: Where the probe logs "start|end <tag> <epoch>" lines on the host.
PROBE_LOG = "/var/tmp/bf-probe.log"


class Probe(PackageKind):
    name = "probe"
    label = "Probe"
    timeouts = {"install": 120, "update": 120, "remove": 120}

    def clean_params(self, action: Action, params: Mapping[str, Any]) -> dict[str, Any]:
        seconds = params.get("seconds", 0)
        tag = params.get("tag", "probe")
        fail = bool(params.get("fail", False))
        prompt = bool(params.get("prompt", False))
        pipeline = bool(params.get("pipeline", False))
        stall = float(params.get("stall", 0))
        if not isinstance(seconds, (int, float)) or not 0 <= seconds <= 3600:
            raise ActionRefused("seconds must be a number from 0 to 3600")
        if not isinstance(tag, str) or not re.fullmatch(r"[a-z0-9-]{1,40}", tag):
            raise ActionRefused("tag must be 1-40 lowercase letters, digits or -")
        return {
            "seconds": seconds,
            "tag": tag,
            "fail": fail,
            "prompt": prompt,
            "pipeline": pipeline,
            "stall": stall,
        }

    def script(
        self, action: Action, facts: HostFacts, params: Mapping[str, Any]
    ) -> str:
        seconds, tag = params.get("seconds", 0), params.get("tag", "probe")
        ending = (
            "echo 'probe failed as asked' >&2; exit 3\n" if params.get("fail") else ""
        )
        # A question on the terminal, as a package's configuration might ask.
        prompt = "read -r -p 'Keep the current configuration? [Y/n] ' answer\n"
        return (
            f'echo "start {tag} $(date +%s.%N)" >> {PROBE_LOG}\n'
            f"echo 'probe {tag} running'\n"
            + (prompt if params.get("prompt") else "")
            # A pipeline whose first stage fails and whose last succeeds.
            + (
                "grep -h probe /nonexistent/file | sort\n"
                if params.get("pipeline")
                else ""
            )
            + f"sleep {float(seconds)}\n"
            f'echo "end {tag} $(date +%s.%N)" >> {PROBE_LOG}\n' + ending
        )

    def verify_script(
        self,
        action: Action,
        facts: HostFacts,
        params: Mapping[str, Any] | None = None,
    ) -> str:
        return "echo probe-ok\n"

    def after_verify(self, operation: Operation, output: str) -> None:
        # Blocking code in the worker itself, out of the runner's timeouts'
        # reach: only the watchdog can end this.
        time.sleep(float(operation.params.get("stall", 0)))


class SecondProbe(Probe):
    """Another kind, so two records on one server can be asked for at once."""

    name = "probe2"
    label = "Second probe"
