"""Every value a person gives to PHP, cron tasks and supervisor programs:
what is refused (and changes nothing), and what an accepted value becomes in
the file BrokeForge owns on the host."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from brokeforge.lifecycle.errors import ActionRefused
from brokeforge.packages.cron_task import CronTaskKind, schedule
from brokeforge.packages.models import CronTask, Database, SupervisorProgram
from brokeforge.packages.service import request_action
from brokeforge.packages.supervisor_program import SupervisorProgramKind
from brokeforge.servers.models import Server

pytestmark = pytest.mark.django_db


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    server = make_server("web-1")
    for kind in ("scheduler", "supervisor"):
        Database.objects.create(
            server=server, kind=kind, status="active", last_action="install"
        )
    return server


@pytest.mark.parametrize(
    "expression",
    [
        "* * * * *",
        "*/5 * * * *",
        "30 2 * * 1-5",
        "0 0 1,15 * *",
        "0 12 * jan-mar mon",
        "@daily",
        "@REBOOT",
        " 0  3 * * 7 ",
    ],
)
def test_it_accepts_presets_and_cron_expressions(expression: str):
    assert schedule(expression) == " ".join(expression.lower().split())


@pytest.mark.parametrize(
    ("expression", "complaint"),
    [
        ("60 * * * *", "minute must be between 0 and 59"),
        ("* 24 * * *", "hour must be between 0 and 23"),
        ("* * 0 * *", "day of month must be between 1 and 31"),
        ("* * * 13 *", "month must be between 1 and 12"),
        ("* * * * 8", "day of week must be between 0 and 7"),
        ("5-1 * * * *", "runs backwards"),
        ("*/0 * * * *", "step in the minute field must be 1 to 59"),
        ("* * * *", "give five fields"),
        ("* * * * * root", "give five fields"),
        ("@often", "unknown preset"),
        ("* * * * *;id", "not valid cron syntax"),
        ("$(id) * * * *", "not valid cron syntax"),
        ("* * * * *\n* * * * * root id", "give five fields"),
        ("", "give the schedule"),
    ],
)
def test_it_refuses_bad_schedules(expression: str, complaint: str):
    with pytest.raises(ActionRefused, match=re.escape(complaint)):
        schedule(expression)


GOOD_TASK = {"name": "backup", "schedule": "@daily", "user": "root", "command": "true"}


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"name": "../etc/passwd"}, "task name '../etc/passwd' is not allowed"),
        ({"name": "a.b"}, "is not allowed"),
        ({"name": "a;b"}, "is not allowed"),
        ({"user": "root\n* * * * * root id"}, "is not a valid user name"),
        ({"user": "$(id)"}, "is not a valid user name"),
        ({"user": "us'er"}, "is not a valid user name"),
        ({"command": "true\n* * * * * root rm -rf /"}, "must be one line"),
        ({"command": "true\r"}, "must be one line"),
        ({"command": "   "}, "give the command"),
        ({"command": "x" * 1001}, "longer than 1000"),
        ({"extra": "1"}, "unknown option: extra"),
    ],
)
def test_it_refuses_bad_task_options_and_adds_nothing(
    server: Server, changes: dict[str, str], complaint: str
):
    with pytest.raises(ActionRefused, match=re.escape(complaint)):
        request_action(server, "cron_task", "add", params={**GOOD_TASK, **changes})

    assert not CronTask.objects.exists()


def test_a_tasks_file_holds_one_line_with_percent_escaped():
    text = CronTaskKind().file_text(
        {
            "name": "x",
            "schedule": "0 1 * * *",
            "user": "www-data",
            "command": "date +%F > '/tmp/a b'; echo \"$(id)\"",
        }
    )

    lines = text.splitlines()
    assert lines[-1] == "0 1 * * * www-data date +\\%F > '/tmp/a b'; echo \"$(id)\""
    assert [line for line in lines if not line.startswith("#")][:2] == [
        "SHELL=/bin/sh",
        "PATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin",
    ]


GOOD_PROGRAM = {"name": "queue", "command": "php artisan queue:work"}


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"name": "q]\n[program:evil"}, "program name"),
        ({"command": "run\n[program:evil]\ncommand=id"}, "must be one line"),
        (
            {"directory": "/srv/../etc"},
            "working directory '/srv/../etc' is not allowed",
        ),
        ({"directory": "relative/dir"}, "is not allowed"),
        ({"directory": "/srv/app\nuser=root"}, "is not allowed"),
        ({"directory": "/srv/$(id)"}, "is not allowed"),
        ({"directory": "/srv/a'b"}, "is not allowed"),
        ({"user": "www-data\nuser=root"}, "is not a valid user name"),
        ({"numprocs": "0"}, "processes must be between 1 and 100"),
        ({"numprocs": "2;id"}, "processes must be a whole number"),
        ({"stopsignal": "TERM\nuser=root"}, "stop signal must be one of"),
        ({"autorestart": "always"}, "autorestart must be one of"),
        ({"stopwaitsecs": "-1"}, "stop wait must be between 1 and 3600"),
        ({"autostart": "maybe"}, "autostart must be yes or no"),
    ],
)
def test_it_refuses_bad_program_options_and_adds_nothing(
    server: Server, changes: dict[str, str], complaint: str
):
    with pytest.raises(ActionRefused, match=re.escape(complaint)):
        request_action(
            server, "supervisor_program", "add", params={**GOOD_PROGRAM, **changes}
        )

    assert not SupervisorProgram.objects.exists()


def test_a_programs_file_doubles_percent_and_names_its_processes(server: Server):
    operation = request_action(
        server,
        "supervisor_program",
        "add",
        params={
            **GOOD_PROGRAM,
            "command": "printf '%s' x",
            "numprocs": "3",
            "autostart": False,
        },
    )

    text = SupervisorProgramKind().conf_text(operation.params)
    assert "command=printf '%%s' x\n" in text
    assert "process_name=%(program_name)s_%(process_num)02d\n" in text
    assert "autostart=false\n" in text
    assert text.count("[program:") == 1


@pytest.mark.parametrize(
    ("params", "complaint"),
    [
        ({"version": "8.2;id"}, "PHP version '8.2;id' is not valid"),
        ({"version": "../8"}, "is not valid"),
        ({"version": "8"}, "is not valid"),
        ({"version": "8.2", "extensions": "x"}, "unknown option for install"),
    ],
)
def test_it_refuses_bad_php_versions(
    server: Server, params: dict[str, str], complaint: str
):
    with pytest.raises(ActionRefused, match=re.escape(complaint)):
        request_action(server, "php", "install", params=params)
