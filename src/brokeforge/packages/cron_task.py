"""Scheduled tasks: each one file under /etc/cron.d that BrokeForge owns.

A task needs the scheduler (cron) active. Its file is written whole from
the script's standard input, so no value passes through shell quoting; the
values themselves are validated so that none can add a line to the file.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from brokeforge.lifecycle.errors import ActionRefused
from brokeforge.lifecycle.models import Action, ManagedRecord
from brokeforge.packages import validators
from brokeforge.packages.apt import q, script_header
from brokeforge.packages.base import Field, HostFacts, PackageKind, Script
from brokeforge.packages.models import CronTask

CRON_DIR = "/etc/cron.d"
PRESETS = (
    ("@hourly", "every hour"),
    ("@daily", "every day at midnight"),
    ("@weekly", "every Sunday at midnight"),
    ("@monthly", "on the first of every month"),
    ("@yearly", "on January 1st"),
    ("@reboot", "when the server starts"),
)
PRESET_NAMES = frozenset(name for name, _ in PRESETS)
MONTHS = (
    "jan", "feb", "mar", "apr", "may", "jun",
    "jul", "aug", "sep", "oct", "nov", "dec",
)  # fmt: skip
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (name, lowest, highest, names for 0.. or 1..)
CRON_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, MONTHS),
    ("day of week", 0, 7, DAYS),
)
ITEM = re.compile(r"(\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/([0-9]+))?")


def task_file(name: str) -> str:
    return f"{CRON_DIR}/brokeforge-{name}"


def _cron_value(
    text: str, field: str, low: int, high: int, names: Sequence[str]
) -> int:
    if text.isdigit():
        number = int(text)
    elif text in names:
        number = names.index(text) + (1 if field == "month" else 0)
    else:
        raise ActionRefused(f"the {field} field has {text!r}: not a number or name")
    if not low <= number <= high:
        raise ActionRefused(
            f"the {field} must be between {low} and {high}, not {number}"
        )
    return number


def schedule(value: object) -> str:
    """A preset (@daily...) or five cron fields of numbers, names, ranges,
    lists and steps, each within its bounds."""
    if not isinstance(value, str) or not value.strip():
        raise ActionRefused(
            "give the schedule: a preset such as @daily or a cron expression"
        )
    text = value.strip().lower()
    if text.startswith("@"):
        if text not in PRESET_NAMES:
            raise ActionRefused(
                f"unknown preset {value!r}: choose one of "
                f"{', '.join(sorted(PRESET_NAMES))}"
            )
        return text
    parts = text.split()
    if len(parts) != 5 or len(text) > 100:
        raise ActionRefused(
            f"{value[:80]!r} is not a cron expression: give five fields "
            "(minute hour day-of-month month day-of-week), e.g. '30 2 * * 1-5'"
        )
    for part, (field, low, high, names) in zip(parts, CRON_FIELDS, strict=True):
        for item in part.split(","):
            match = ITEM.fullmatch(item)
            if match is None:
                raise ActionRefused(
                    f"the {field} field {part!r} is not valid cron syntax"
                )
            span, step = match.groups()
            if step is not None and not 1 <= int(step) <= high:
                raise ActionRefused(
                    f"the step in the {field} field must be 1 to {high}"
                )
            if span == "*":
                continue
            ends = [
                _cron_value(end, field, low, high, names) for end in span.split("-")
            ]
            if len(ends) == 2 and ends[0] > ends[1]:
                raise ActionRefused(
                    f"the range {span!r} in the {field} field runs backwards"
                )
    return " ".join(parts)


class CronTaskKind(PackageKind):
    name = "cron_task"
    label = "Scheduled task"
    family = "scheduler"
    model = CronTask
    unique_by = "name"
    many = True
    parent = "scheduler"
    uses_package_manager = False
    timeouts = {"install": 60, "update": 60, "remove": 60}
    verbs = {"install": "add", "remove": "delete"}
    fields = (
        Field("name", "Name", help="lowercase letters, digits, dashes; names its file"),
        Field(
            "schedule",
            "Schedule",
            help="a preset (@hourly, @daily, @weekly, "
            "@monthly, @yearly, @reboot) or a cron expression such as '*/5 * * * *'",
            default="@daily",
        ),
        Field("user", "Runs as", default="root"),
        Field("command", "Command", help="one line, run by /bin/sh"),
    )

    def clean_params(self, action: Action, params: Mapping[str, Any]) -> dict[str, Any]:
        if action != Action.INSTALL:
            return super().clean_params(action, params)
        validators.refuse_unknown(params, {f.name for f in self.fields})
        clean: dict[str, Any] = {}
        with validators.option("name"):
            clean["name"] = validators.slug(params.get("name"), "task name", 48)
        with validators.option("schedule"):
            clean["schedule"] = schedule(params.get("schedule"))
        with validators.option("user"):
            clean["user"] = validators.unix_user(params.get("user") or "root")
        with validators.option("command"):
            clean["command"] = validators.command(params.get("command"))
        return clean

    def identity(self, record: ManagedRecord) -> dict[str, Any]:
        assert isinstance(record, CronTask)
        return {
            "name": record.name,
            "schedule": record.schedule,
            "user": record.user,
            "command": record.command,
        }

    def describe(self, record: ManagedRecord) -> str:
        assert isinstance(record, CronTask)
        return f"task {record.name} ({record.schedule})"

    def file_text(self, params: Mapping[str, Any]) -> str:
        # cron turns an unescaped % into a line break of the command's input.
        command = params["command"].replace("%", "\\%")
        return (
            f"# Managed by BrokeForge (task {params['name']}): changes here are "
            "overwritten or deleted.\n"
            "SHELL=/bin/sh\n"
            "PATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin\n"
            f"{params['schedule']} {params['user']} {command}\n"
        )

    def script(
        self, action: Action, facts: HostFacts, params: Mapping[str, Any]
    ) -> str:
        target = q(task_file(params["name"]))
        if action == Action.REMOVE:
            return (
                f"rm -f {target}\n"
                f"if [ -e {target} ]; then\n"
                f"  echo 'could not delete {target}' >&2; exit 1\n"
                "fi\n"
                f"echo 'deleted {target}'\n"
            )
        text = self.file_text(params)
        digest = hashlib.sha256(text.encode()).hexdigest()
        user = q(params["user"])
        no_user = q(f"user {params['user']} does not exist on this server")
        body = (
            f"if ! id -u {user} >/dev/null 2>&1; then\n"
            f"  echo {no_user} >&2\n"
            "  exit 1\n"
            "fi\n"
            # cron ignores file names with a dot: the half-written file is inert.
            f"tmp=$(mktemp {CRON_DIR}/.brokeforge-XXXXXX)\n"
            'cat "$BF_INPUT" > "$tmp"\n'
            'chmod 0644 "$tmp"\n'
            f'mv -f "$tmp" {target}\n'
            f'if [ "$(sha256sum < {target} | cut -d" " -f1)" != {digest} ]; then\n'
            f"  echo 'the file {target} does not hold what was written' >&2; exit 1\n"
            "fi\n"
            "if ! bf_service status cron >/dev/null 2>&1; then\n"
            "  echo 'cron is not running on this server: the task will not run' >&2\n"
            "  exit 1\n"
            "fi\n"
            f"echo 'wrote {target}'\n"
        )
        return Script(script_header(facts) + body, stdin=text)

    def verify_script(
        self,
        action: Action,
        facts: HostFacts,
        params: Mapping[str, Any] | None = None,
    ) -> str:
        # The action script checks the file it wrote or deleted.
        return "true\n"
