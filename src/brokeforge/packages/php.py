"""PHP versions: FPM and the common extensions, several side by side.

Debian 12's archive has PHP 8.2 only; asking it for another version fails
with a sentence saying so. On Ubuntu the install first adds the ondrej/php
archive (Launchpad PPA), which carries every supported version; that path
was only exercised against the scripted SSH server (see docs/packages.md).
`php` on the command line runs the version marked as the default CLI
(update-alternatives), chosen at install or with an update.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from brokeforge.lifecycle.errors import InvalidOption
from brokeforge.lifecycle.models import Action, ManagedRecord, Operation
from brokeforge.packages import validators
from brokeforge.packages.apt import q, script_header
from brokeforge.packages.base import Field, HostFacts, PackageKind
from brokeforge.packages.models import PhpVersion
from brokeforge.servers.models import Server

VERSION = re.compile(r"[5-9]\.[0-9]")
EXTENSIONS = (
    "fpm",
    "cli",
    "common",
    "mysql",
    "pgsql",
    "curl",
    "mbstring",
    "xml",
    "zip",
    "gd",
    "intl",
    "bcmath",
    "opcache",
    "readline",
)
PPA = "ppa:ondrej/php"


def fpm_socket(version: str) -> str:
    return f"/run/php/php{version}-fpm.sock"


class Php(PackageKind):
    name = "php"
    label = "PHP"
    family = "php"
    model = PhpVersion
    unique_by = "version"
    many = True
    timeouts = {"install": 900, "update": 900, "remove": 600}
    fields = (
        Field(
            "version",
            "Version",
            help="e.g. 8.2 (the one Debian 12 ships)",
            default="8.2",
        ),
        Field(
            "default_cli", "Default for the php command", boolean=True, required=False
        ),
    )
    update_fields = (
        Field(
            "default_cli",
            "Make it the default for the php command",
            boolean=True,
            required=False,
        ),
    )

    def clean_params(self, action: Action, params: Mapping[str, Any]) -> dict[str, Any]:
        allowed = {"install": {"version", "default_cli"}, "update": {"default_cli"}}
        validators.refuse_unknown(
            params, allowed.get(action, set()), f"unknown option for {action}"
        )
        clean: dict[str, Any] = {}
        if action == Action.INSTALL:
            version = params.get("version")
            if not isinstance(version, str) or not VERSION.fullmatch(version):
                raise InvalidOption(
                    "version",
                    f"PHP version {str(version)[:20]!r} is not valid: give it as "
                    "major.minor, e.g. 8.2",
                )
            clean["version"] = version
        if "default_cli" in params:
            with validators.option("default_cli"):
                clean["default_cli"] = validators.boolean(
                    params["default_cli"], "default_cli"
                )
        return clean

    def new_record(self, server: Server, clean: Mapping[str, Any]) -> ManagedRecord:
        return PhpVersion(server=server, version=clean["version"])

    def identity(self, record: ManagedRecord) -> dict[str, Any]:
        assert isinstance(record, PhpVersion)
        return {"version": record.version}

    def describe_missing(self, lookup: Mapping[str, Any]) -> str:
        return f"PHP {lookup.get('version', '')}".strip()

    def describe(self, record: ManagedRecord) -> str:
        assert isinstance(record, PhpVersion)
        default = " (default CLI)" if record.default_cli else ""
        return f"PHP {record.version}{default}"

    def script(
        self, action: Action, facts: HostFacts, params: Mapping[str, Any]
    ) -> str:
        version = params["version"]
        fpm = q(f"php{version}-fpm")
        if action == Action.REMOVE:
            pattern = q(f"php{version}-*")
            body = (
                f"bf_service stop {fpm} || true\n"
                f"pkgs=$(dpkg-query -W -f='${{Package}}\\n' {pattern} 2>/dev/null"
                " || true)\n"
                'if [ -n "$pkgs" ]; then bf_purge $pkgs\n'
                "else bf_apt autoremove --purge; fi\n"
                f"if command -v php{version} >/dev/null; then\n"
                f"  echo 'php{version} is still installed' >&2; exit 1\n"
                "fi\n"
                f"echo 'removed PHP {version}'\n"
            )
            return script_header(facts) + body
        packages = " ".join(q(f"php{version}-{ext}") for ext in EXTENSIONS)
        steps = [script_header(facts)]
        if facts.os_id == "ubuntu":
            steps.append(
                "bf_apt_update\n"
                "bf_apt install software-properties-common ca-certificates\n"
                f"add-apt-repository -y {PPA}\n"
            )
        steps.append(
            "bf_php_versions() {\n"
            "  apt-cache pkgnames php | grep -oE '^php[0-9]\\.[0-9]+-fpm$' "
            "| sed -E 's/^php(.*)-fpm$/\\1/' | sort -u | paste -sd' ' || true\n"
            "}\n"
            "bf_apt_update\n"
            # `apt-cache show` also answers for a name other packages only
            # mention; madison lists versions that can really be installed.
            f'if [ -z "$(apt-cache madison {fpm} 2>/dev/null)" ]; then\n'
            f"  echo \"PHP {version} is not in this server's package archive, which "
            'offers: $(bf_php_versions)" >&2; exit 1\n'
            "fi\n"
            f"bf_apt install {packages}\n"
            f"bf_enable_service {fpm}\n"
            f"bf_wait_for {q(f'PHP {version} FPM')} test -S {q(fpm_socket(version))}\n"
        )
        if params.get("default_cli"):
            steps.append(
                f"update-alternatives --set php {q(f'/usr/bin/php{version}')}\n"
            )
        steps.append(f"php{version} -r 'echo PHP_VERSION, PHP_EOL;'\n")
        return "".join(steps)

    def verify_script(
        self,
        action: Action,
        facts: HostFacts,
        params: Mapping[str, Any] | None = None,
    ) -> str:
        # The action script checks the FPM socket and runs php itself.
        return "true\n"

    def after_verify(self, operation: Operation, output: str) -> None:
        if operation.action == Action.REMOVE or not operation.params.get("default_cli"):
            return
        record = PhpVersion.objects.filter(pk=operation.record_id).first()
        if record is None:
            return
        PhpVersion.objects.filter(server=record.server).exclude(pk=record.pk).update(
            default_cli=False
        )
        PhpVersion.objects.filter(pk=record.pk).update(default_cli=True)
