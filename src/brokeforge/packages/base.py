"""What every package kind declares: its scripts, timeouts and checks.

A kind turns an action into shell scripts for the host it meets (see
`HostFacts`); the runner runs them over SSH. Scripts run under
`set -euo pipefail` with a non-interactive apt (see `servers.ssh.PRELUDE`),
and success is proven by a verification script that asks the host, never
assumed from an exit status.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from brokeforge.lifecycle.errors import ActionRefused, OperationFailure
from brokeforge.lifecycle.models import Action, Operation

DEFAULT_TIMEOUT = 600

# Read the host's identity and init system in one round trip.
FACTS_SCRIPT = """\
cat /etc/os-release
if [ -d /run/systemd/system ]; then echo BROKEFORGE_INIT=systemd; \
else echo BROKEFORGE_INIT=other; fi
"""

SUPPORTED_SYSTEMS = {("debian", "12"), ("ubuntu", "22.04"), ("ubuntu", "24.04")}


class UnsupportedSystem(OperationFailure):
    reason_class = "unsupported_system"


class VerificationFailed(OperationFailure):
    reason_class = "verification_failed"


@dataclass(frozen=True)
class HostFacts:
    os_id: str
    version_id: str
    codename: str
    pretty_name: str
    has_systemd: bool

    @classmethod
    def parse(cls, text: str) -> HostFacts:
        values: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip().strip('"')
        facts = cls(
            os_id=values.get("ID", ""),
            version_id=values.get("VERSION_ID", ""),
            codename=values.get("VERSION_CODENAME", ""),
            pretty_name=values.get("PRETTY_NAME", "an unknown system"),
            has_systemd=values.get("BROKEFORGE_INIT") == "systemd",
        )
        supported = (facts.os_id, facts.version_id) in SUPPORTED_SYSTEMS
        # The codename ends up in apt source lines: only plain words pass.
        if not supported or not re.fullmatch(r"[a-z]+", facts.codename):
            raise UnsupportedSystem(
                f"{facts.pretty_name} is not supported: BrokeForge manages "
                "Debian 12 and Ubuntu 22.04 and 24.04"
            )
        return facts


class PackageKind:
    """One kind of thing BrokeForge manages. Subclass once per kind."""

    name: ClassVar[str]
    label: ClassVar[str]
    #: Kinds that cannot be installed on the same server as this one.
    conflicts: ClassVar[frozenset[str]] = frozenset()
    #: Seconds each action may run before it is ended as timed out.
    timeouts: ClassVar[Mapping[str, int]] = {}
    #: Whether the kind's scripts use the server's package manager.
    uses_package_manager: ClassVar[bool] = True

    def timeout(self, action: Action) -> int:
        return self.timeouts.get(action, DEFAULT_TIMEOUT)

    def clean_params(self, action: Action, params: Mapping[str, Any]) -> dict[str, Any]:
        """Validate what the person chose for `action`; ActionRefused if wrong."""
        if params:
            raise ActionRefused(f"{action} of {self.label} takes no options")
        return {}

    def script(
        self, action: Action, facts: HostFacts, params: Mapping[str, Any]
    ) -> str:
        raise NotImplementedError

    def after_verify(self, operation: Operation, output: str) -> None:
        """Store what verification learned (runs in the worker, in the database)."""

    def verify_script(self, action: Action, facts: HostFacts) -> str:
        """A script that exits 0 only when the action's effect is real.

        Its last line of output is kept as the record's version after an
        install or update.
        """
        raise NotImplementedError
