"""The runner against the scripted SSH server: every failure class, and MySQL.

The scripted server answers each command by rule, so these tests produce on
demand what a real host cannot: a hang, a dropped connection, a silent peer,
Ubuntu's archive, and MySQL's repository.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from brokeforge.lifecycle.models import Operation, OperationState, RecordStatus
from brokeforge.packages import registry
from brokeforge.packages.models import Database
from brokeforge.packages.service import request_action
from brokeforge.servers.models import Server
from tests.conftest import run_now
from tests.testhosts.fixtures import ScriptedSSHTestServer

pytestmark = pytest.mark.django_db(transaction=True)

DEBIAN_12 = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION_CODENAME=bookworm
ID=debian
BROKEFORGE_INIT=systemd
"""
UBUNTU_2404 = """\
PRETTY_NAME="Ubuntu 24.04.1 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
VERSION_CODENAME=noble
ID=ubuntu
BROKEFORGE_INIT=systemd
"""
FACTS = r"cat /etc/os-release"
VERIFY = r"bf_ping\(\)|echo removed"


@pytest.fixture
def scripted_server(
    make_server: Callable[..., Server], scripted_ssh: ScriptedSSHTestServer
) -> Server:
    key = scripted_ssh.client_key.export_private_key().decode()
    return make_server("s1", port=scripted_ssh.port, private_key=key)


def answer_as(ssh: ScriptedSSHTestServer, os_release: str) -> None:
    ssh.add_rule(FACTS, stdout=os_release)


def scripts_sent(ssh: ScriptedSSHTestServer) -> list[str]:
    return [c for c in ssh.commands if "/etc/os-release" not in c]


def install(
    server: Server, kind: str = "redis", timeout: int | None = None
) -> Operation:
    operation = request_action(server, kind, "install")
    if timeout is not None:
        Operation.objects.filter(pk=operation.pk).update(timeout_seconds=timeout)
    return run_now(operation)


def record(server: Server, kind: str = "redis") -> Database:
    return Database.objects.get(server=server, kind=kind)


def test_it_installs_mysql_on_debian_from_mysqls_repository(
    scripted_server: Server, scripted_ssh: ScriptedSSHTestServer
):
    answer_as(scripted_ssh, DEBIAN_12)
    scripted_ssh.add_rule(VERIFY, stdout="8.4.3\n")
    scripted_ssh.add_rule(".")

    operation = install(scripted_server, "mysql")

    assert operation.state == OperationState.SUCCEEDED, operation.error_message
    mysql = record(scripted_server, "mysql")
    assert (mysql.status, mysql.version) == ("active", "8.4.3")
    script = scripts_sent(scripted_ssh)[0]
    assert "https://repo.mysql.com/RPM-GPG-KEY-mysql-2023" in script
    assert "https://repo.mysql.com/apt/debian bookworm mysql-8.4-lts" in script
    assert "bf_apt install mysql-server" in script
    assert "set -euo pipefail" in script


def test_it_installs_mysql_on_ubuntu_from_the_archive(
    scripted_server: Server, scripted_ssh: ScriptedSSHTestServer
):
    answer_as(scripted_ssh, UBUNTU_2404)
    scripted_ssh.add_rule(VERIFY, stdout="8.0.40\n")
    scripted_ssh.add_rule(".")

    operation = install(scripted_server, "mysql")

    assert operation.state == OperationState.SUCCEEDED, operation.error_message
    script = scripts_sent(scripted_ssh)[0]
    assert "bf_apt install mysql-server" in script
    assert "repo.mysql.com" not in script


@pytest.mark.parametrize(
    ("os_release", "expected", "absent"),
    [
        (DEBIAN_12, "rm -f /etc/apt/sources.list.d/mysql.list", None),
        (UBUNTU_2404, "bf_purge mysql-server", "sources.list.d/mysql.list"),
    ],
)
def test_it_updates_and_removes_mysql(
    scripted_server: Server,
    scripted_ssh: ScriptedSSHTestServer,
    os_release: str,
    expected: str,
    absent: str | None,
):
    answer_as(scripted_ssh, os_release)
    scripted_ssh.add_rule(VERIFY, stdout="8.4.4\n")
    scripted_ssh.add_rule(".")
    install(scripted_server, "mysql")
    scripted_ssh.clear_commands()

    update = run_now(request_action(scripted_server, "mysql", "update"))
    assert update.state == OperationState.SUCCEEDED, update.error_message
    assert "bf_apt install --only-upgrade mysql-server" in scripts_sent(scripted_ssh)[0]

    remove = run_now(
        request_action(scripted_server, "mysql", "remove", params={"data": "delete"})
    )
    assert remove.state == OperationState.SUCCEEDED, remove.error_message
    script = scripts_sent(scripted_ssh)[2]
    assert expected in script
    assert "rm -rf /var/lib/mysql" in script
    if absent:
        assert absent not in script
    assert not Database.objects.filter(server=scripted_server).exists()


def test_it_reports_apts_error_lines(
    scripted_server: Server, scripted_ssh: ScriptedSSHTestServer
):
    answer_as(scripted_ssh, DEBIAN_12)
    scripted_ssh.add_rule(
        ".",
        stderr="Reading package lists...\nE: Unable to locate package redis-server\n",
        exit_status=100,
    )

    install(scripted_server)

    failed = record(scripted_server)
    assert failed.status == RecordStatus.FAILED
    assert failed.error_message == (
        "E: Unable to locate package redis-server (exit status 100)"
    )


def test_it_fails_when_the_host_does_not_verify(
    scripted_server: Server, scripted_ssh: ScriptedSSHTestServer
):
    answer_as(scripted_ssh, DEBIAN_12)
    scripted_ssh.add_rule(
        VERIFY, stderr="Redis does not answer on this host after 30 s\n", exit_status=1
    )
    scripted_ssh.add_rule(".")

    operation = install(scripted_server)

    assert operation.reason_class == "verification_failed"
    assert record(scripted_server).error_message == (
        "install ran, but the check on the host failed: "
        "Redis does not answer on this host after 30 s"
    )


def test_it_refuses_an_unsupported_system(
    scripted_server: Server, scripted_ssh: ScriptedSSHTestServer
):
    answer_as(scripted_ssh, 'PRETTY_NAME="CentOS Stream 9"\nID=centos\nVERSION_ID=9\n')

    install(scripted_server)

    assert "CentOS Stream 9 is not supported" in record(scripted_server).error_message
    assert scripts_sent(scripted_ssh) == []


def test_it_times_out_a_hanging_command(
    scripted_server: Server, scripted_ssh: ScriptedSSHTestServer
):
    answer_as(scripted_ssh, DEBIAN_12)
    scripted_ssh.add_rule(".", hang=True)

    operation = install(scripted_server, timeout=2)

    assert operation.reason_class == "timed_out"
    assert record(scripted_server).error_message == "timed out after 2 s"


def test_it_times_out_when_the_server_falls_silent(
    scripted_server: Server, scripted_ssh: ScriptedSSHTestServer
):
    answer_as(scripted_ssh, DEBIAN_12)
    scripted_ssh.add_rule(".", delay=0.5, stdout="never seen\n")
    scripted_ssh.add_rule(FACTS, stdout=DEBIAN_12)

    def go_silent_after_facts() -> None:
        scripted_ssh.wait_for_command("bf_apt_update")
        scripted_ssh.silent()

    import threading

    silencer = threading.Thread(target=go_silent_after_facts)
    silencer.start()
    operation = install(scripted_server, timeout=3)
    silencer.join()

    assert operation.reason_class == "timed_out"
    assert record(scripted_server).error_message == "timed out after 3 s"


def test_it_names_a_dropped_connection(
    scripted_server: Server, scripted_ssh: ScriptedSSHTestServer
):
    answer_as(scripted_ssh, DEBIAN_12)
    scripted_ssh.add_rule(".", stdout="Unpacking redis-server ...\n", disconnect=True)

    operation = install(scripted_server)

    assert operation.reason_class == "connection_lost"
    assert record(scripted_server).error_message.startswith(
        f"lost SSH connection to s1 (127.0.0.1:{scripted_ssh.port})"
    )
    assert "Unpacking redis-server" in operation.output


def test_it_names_refused_authentication(
    scripted_server: Server, scripted_ssh: ScriptedSSHTestServer
):
    scripted_ssh.refuse_auth = True

    install(scripted_server)

    assert record(scripted_server).error_message.startswith(
        f"authentication refused by 127.0.0.1:{scripted_ssh.port} for user root"
    )


def test_it_pins_the_host_key_and_refuses_a_changed_one(
    scripted_server: Server, scripted_ssh: ScriptedSSHTestServer
):
    answer_as(scripted_ssh, DEBIAN_12)
    scripted_ssh.add_rule(VERIFY, stdout="7.0.15\n")
    scripted_ssh.add_rule(".")
    install(scripted_server)
    scripted_server.refresh_from_db()
    assert scripted_server.host_key == scripted_ssh.host_key_line

    scripted_ssh.replace_host_key()
    scripted_ssh.clear_commands()
    operation = run_now(request_action(scripted_server, "redis", "update"))

    assert operation.reason_class == "host_key_changed"
    assert record(scripted_server).error_message.startswith(
        f"host key changed: 127.0.0.1:{scripted_ssh.port} presented SHA256:"
    )
    assert "nothing was run" in record(scripted_server).error_message
    assert scripted_ssh.commands == []


def test_it_names_a_refused_connection(make_server: Callable[..., Server]):
    server = make_server("nobody-home", port=9)

    install(server)

    assert record(server).error_message == (
        "could not connect to 127.0.0.1:9: connection refused"
    )


def test_it_fails_the_record_when_the_runner_crashes(
    scripted_server: Server,
    scripted_ssh: ScriptedSSHTestServer,
    monkeypatch: pytest.MonkeyPatch,
):
    answer_as(scripted_ssh, DEBIAN_12)

    def broken_script(*args: object) -> str:
        raise RuntimeError("a bug in a package kind")

    monkeypatch.setattr(registry.KINDS["redis"], "script", broken_script)

    operation = install(scripted_server)

    assert operation.reason_class == "crashed"
    assert record(scripted_server).error_message == (
        "BrokeForge crashed: RuntimeError: a bug in a package kind"
    )


def test_it_refuses_a_host_whose_codename_could_reach_a_shell(
    scripted_server: Server, scripted_ssh: ScriptedSSHTestServer
):
    answer_as(scripted_ssh, DEBIAN_12.replace("bookworm", "bookworm$(reboot)"))

    install(scripted_server, "mysql")

    assert "is not supported" in record(scripted_server, "mysql").error_message
    assert scripts_sent(scripted_ssh) == []


def test_it_stores_output_with_nul_bytes(
    scripted_server: Server, scripted_ssh: ScriptedSSHTestServer
):
    # PostgreSQL text columns refuse NUL; it must never keep a result unwritten.
    answer_as(scripted_ssh, DEBIAN_12)
    scripted_ssh.add_rule(VERIFY, stdout=b"7.0\x0015\n")
    scripted_ssh.add_rule(".", stdout=b"progress\x00\n")

    operation = install(scripted_server)

    assert operation.state == OperationState.SUCCEEDED, operation.error_message
    assert "progress\ufffd" in operation.output
    assert "\x00" not in record(scripted_server).version


def test_it_keeps_the_tail_of_a_huge_output_and_counts_what_it_dropped(
    scripted_server: Server, scripted_ssh: ScriptedSSHTestServer
):
    answer_as(scripted_ssh, DEBIAN_12)
    scripted_ssh.add_rule(VERIFY, stdout="7.0.15\n")
    lines = "".join(f"line {n:06d} {'x' * 90}\n" for n in range(4000))
    scripted_ssh.add_rule(".", stdout=lines + "the last line\n")

    operation = install(scripted_server)

    assert operation.state == OperationState.SUCCEEDED, operation.error_message
    assert len(operation.output) <= 256 * 1024
    assert operation.output_dropped > 0
    assert "the last line" in operation.output
    assert "line 000000" not in operation.output


def test_it_times_out_a_server_that_never_opens_the_command_channel(
    scripted_server: Server, scripted_ssh: ScriptedSSHTestServer
):
    scripted_ssh.stall_sessions = True

    operation = install(scripted_server, timeout=2)

    assert operation.reason_class == "timed_out"
    assert record(scripted_server).error_message.startswith("timed out after 2 s")
