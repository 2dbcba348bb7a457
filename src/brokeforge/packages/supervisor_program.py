"""Programs supervisor keeps running: each one file under
/etc/supervisor/conf.d that BrokeForge owns.

A program needs Supervisor active. Its file is written whole from the
script's standard input; every value in it is validated so that none can
add a line or a section, and `%` is doubled (supervisor expands `%(x)s`).
An install or update is verified by supervisor itself: every process of the
program must reach RUNNING (when it starts automatically).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from brokeforge.lifecycle.models import Action, ManagedRecord
from brokeforge.packages import validators
from brokeforge.packages.apt import q, script_header
from brokeforge.packages.base import Field, HostFacts, PackageKind, Script
from brokeforge.packages.models import SupervisorProgram

CONF_DIR = "/etc/supervisor/conf.d"
LOG_DIR = "/var/log/supervisor"
SIGNALS = ("TERM", "HUP", "INT", "QUIT", "KILL", "USR1", "USR2")
AUTORESTART = ("true", "false", "unexpected")
#: Seconds a process must stay up to count as started (supervisor's startsecs).
START_SECONDS = 1
#: How long the script waits for every process to reach RUNNING.
RUNNING_WAIT = 30


def conf_file(name: str) -> str:
    return f"{CONF_DIR}/brokeforge-{name}.conf"


class SupervisorProgramKind(PackageKind):
    name = "supervisor_program"
    label = "Program"
    family = "supervisor"
    model = SupervisorProgram
    unique_by = "name"
    many = True
    parent = "supervisor"
    uses_package_manager = False
    timeouts = {"install": 90, "update": 90, "remove": 90}
    verbs = {"install": "add", "remove": "delete"}
    fields = (
        Field("name", "Name", help="lowercase letters, digits, dashes"),
        Field("command", "Command", help="one line; not run through a shell"),
        Field("directory", "Working directory", default="/"),
        Field("user", "Runs as", default="root"),
        Field("numprocs", "Processes", default="1"),
        Field(
            "autostart",
            "Start automatically",
            boolean=True,
            default="yes",
            required=False,
        ),
        Field(
            "autorestart",
            "Restart",
            choices=tuple((v, v) for v in AUTORESTART),
            default="true",
        ),
        Field(
            "stopsignal",
            "Stop signal",
            choices=tuple((s, s) for s in SIGNALS),
            default="TERM",
        ),
        Field("stopwaitsecs", "Stop wait (s)", default="10"),
    )

    def clean_params(self, action: Action, params: Mapping[str, Any]) -> dict[str, Any]:
        if action != Action.INSTALL:
            return super().clean_params(action, params)
        validators.refuse_unknown(params, {f.name for f in self.fields})
        get = params.get
        return validators.each(
            {
                "name": lambda: validators.slug(get("name"), "program name", 48),
                "command": lambda: validators.command(get("command")),
                "directory": lambda: validators.absolute_path(
                    get("directory") or "/", "working directory"
                ),
                "user": lambda: validators.unix_user(get("user") or "root"),
                "numprocs": lambda: validators.integer(
                    get("numprocs", 1), "processes", 1, 100
                ),
                "autostart": lambda: validators.boolean(
                    get("autostart", True), "autostart"
                ),
                "autorestart": lambda: validators.choice(
                    get("autorestart") or "true", "autorestart", AUTORESTART
                ),
                "stopsignal": lambda: validators.choice(
                    str(get("stopsignal") or "TERM").upper(), "stop signal", SIGNALS
                ),
                "stopwaitsecs": lambda: validators.integer(
                    get("stopwaitsecs", 10), "stop wait", 1, 3600
                ),
            }
        )

    def identity(self, record: ManagedRecord) -> dict[str, Any]:
        assert isinstance(record, SupervisorProgram)
        return {
            "name": record.name,
            "command": record.command,
            "directory": record.directory,
            "user": record.user,
            "numprocs": record.numprocs,
            "autostart": record.autostart,
            "autorestart": record.autorestart,
            "stopsignal": record.stopsignal,
            "stopwaitsecs": record.stopwaitsecs,
        }

    def describe(self, record: ManagedRecord) -> str:
        assert isinstance(record, SupervisorProgram)
        many = f" x{record.numprocs}" if record.numprocs > 1 else ""
        return f"program {record.name}{many}"

    def conf_text(self, p: Mapping[str, Any]) -> str:
        name = p["name"]
        process = (
            "%(program_name)s_%(process_num)02d"
            if p["numprocs"] > 1
            else ("%(program_name)s")
        )
        return (
            f"; Managed by BrokeForge (program {name}): changes here are "
            "overwritten or deleted.\n"
            f"[program:{name}]\n"
            f"command={p['command'].replace('%', '%%')}\n"
            f"directory={p['directory']}\n"
            f"user={p['user']}\n"
            f"numprocs={p['numprocs']}\n"
            f"process_name={process}\n"
            f"autostart={'true' if p['autostart'] else 'false'}\n"
            f"autorestart={p['autorestart']}\n"
            f"startsecs={START_SECONDS}\n"
            f"stopsignal={p['stopsignal']}\n"
            f"stopwaitsecs={p['stopwaitsecs']}\n"
            "redirect_stderr=true\n"
            f"stdout_logfile={LOG_DIR}/brokeforge-{name}.log\n"
        )

    def script(
        self, action: Action, facts: HostFacts, params: Mapping[str, Any]
    ) -> str:
        name = params["name"]
        target = q(conf_file(name))
        group = q(f"{name}:*")
        if action == Action.REMOVE:
            body = (
                f"supervisorctl stop {group} || true\n"
                f"rm -f {target}\n"
                "supervisorctl reread\n"
                "supervisorctl update\n"
                f"if supervisorctl avail | grep -q {q('^' + name + ':')}; then\n"
                f"  echo 'supervisor still knows program {name}' >&2; exit 1\n"
                "fi\n"
                f"echo 'deleted program {name}'\n"
            )
            return script_header(facts) + body
        text = self.conf_text(params)
        digest = hashlib.sha256(text.encode()).hexdigest()
        no_user = q(f"user {params['user']} does not exist on this server")
        log = q(f"{LOG_DIR}/brokeforge-{name}.log")
        expected = int(params["numprocs"]) if params["autostart"] else 0
        body = (
            f"if ! id -u {q(params['user'])} >/dev/null 2>&1; then\n"
            f"  echo {no_user} >&2; exit 1\n"
            "fi\n"
            # supervisor reads only *.conf: the half-written file is inert.
            f"tmp=$(mktemp {CONF_DIR}/.brokeforge-XXXXXX)\n"
            'cat "$BF_INPUT" > "$tmp"\n'
            'chmod 0644 "$tmp"\n'
            f'mv -f "$tmp" {target}\n'
            f'if [ "$(sha256sum < {target} | cut -d" " -f1)" != {digest} ]; then\n'
            f"  echo 'the file {target} does not hold what was written' >&2; exit 1\n"
            "fi\n"
            "supervisorctl reread\n"
            f"supervisorctl update {q(name)}\n"
            # A changed file restarts the group; an unchanged one (a retry) is
            # left alone by update, so start what is not running.
            f"if [ {expected} -gt 0 ]; then supervisorctl start {group} || true; fi\n"
            f"for _ in $(seq 1 {RUNNING_WAIT}); do\n"
            f"  status=$(supervisorctl status {group} 2>&1 || true)\n"
            '  running=$(printf "%s\\n" "$status" | grep -c " RUNNING " || true)\n'
            f'  if [ "$running" -ge {expected} ] && ! printf "%s\\n" "$status" '
            "| grep -qE ' (FATAL|BACKOFF|EXITED) '; then\n"
            '    printf "%s\\n" "$status"\n'
            "    exit 0\n"
            "  fi\n"
            "  if printf '%s\\n' \"$status\" | grep -q ' FATAL '; then break; fi\n"
            "  sleep 1\n"
            "done\n"
            # Supervisor's status line and the program's last log line: a
            # spawn error (no such directory, no such command) is in the log.
            f'echo "program {name} is not running: '
            '$(printf "%s\\n" "$status" | tr -s " " | paste -sd ";")" >&2\n'
            f"if [ -s {log} ]; then\n"
            # (supervisor follows a spawn error with a line that says less)
            f"  said=$(grep -v 'child process was not spawned' {log} | tail -n 1)\n"
            f'  echo "its log says: ${{said:-$(tail -n 1 {log})}}" >&2\n'
            "fi\n"
            "exit 1\n"
        )
        return Script(script_header(facts) + body, stdin=text)

    def verify_script(
        self,
        action: Action,
        facts: HostFacts,
        params: Mapping[str, Any] | None = None,
    ) -> str:
        # The action script waits for RUNNING (or checks the removal) itself.
        return "true\n"
