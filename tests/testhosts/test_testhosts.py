"""Tests that the test hosts themselves work: the Debian chroot and the
scripted SSH server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
import pytest

from tests.testhosts.debian_host import (
    DebianHost,
    hold_dpkg_lock,
    mounts_under,
    pids_rooted_at,
)
from tests.testhosts.fixtures import DebianTestHost, ScriptedSSHTestServer

_T = TypeVar("_T")

LOCK_MESSAGE = "Could not get lock /var/lib/dpkg/lock-frontend"
APT_INSTALL = "apt-get -o DPkg::Lock::Timeout=2 install -y hostname"


def run_async(coro: Coroutine[Any, Any, _T], timeout: float = 60) -> _T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def ssh_run(
    target: DebianTestHost | ScriptedSSHTestServer,
    command: str,
    input: str | None = None,
    **options: Any,
) -> asyncssh.SSHCompletedProcess:
    """Connect, run one command and disconnect; options go to connect()."""
    async with target.connect(**options) as conn:
        return await conn.run(command, input=input, check=False)


def is_alive(pid: int) -> bool:
    """True unless ``pid`` is gone or a zombie waiting for init to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# ---------------------------------------------------------------------------
# Debian host
# ---------------------------------------------------------------------------


@pytest.mark.debian_host
@pytest.mark.timeout(300)
def test_debian_host_runs_bookworm_over_ssh(debian_host: DebianTestHost) -> None:
    result = run_async(ssh_run(debian_host, "cat /etc/debian_version; id -u"))
    assert result.exit_status == 0, result.stderr
    version, uid = str(result.stdout).split()
    assert version.startswith("12")
    assert uid == "0"
    assert debian_host.run("cat /etc/debian_version").stdout.startswith("12")


@pytest.mark.debian_host
@pytest.mark.timeout(300)
def test_dpkg_lock_is_seen_by_apt_in_the_host(debian_host: DebianTestHost) -> None:
    with hold_dpkg_lock(debian_host.root):
        held = run_async(ssh_run(debian_host, APT_INSTALL))
    assert held.exit_status != 0
    assert LOCK_MESSAGE in str(held.stdout) + str(held.stderr)

    released = run_async(ssh_run(debian_host, APT_INSTALL))
    assert released.exit_status == 0, released.stderr


@pytest.mark.debian_host
@pytest.mark.timeout(300)
def test_pids_and_close_cover_processes_started_over_ssh(tmp_path: Path) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    host = DebianTestHost(tmp_path / "host", key)
    with host:
        root = host.root
        result = run_async(ssh_run(host, "nohup sleep 1000 >/dev/null 2>&1 & echo $!"))
        sleeper = int(str(result.stdout).strip())
        assert sleeper in host.pids()
        assert host.sshd_pid in host.pids()
        assert host.sshd_pid not in host.pids(include_listener=False)
        assert Path(f"/proc/{sleeper}/cmdline").read_bytes() == b"sleep\x001000\x00"
        assert mounts_under(root)
    assert pids_rooted_at(root) == []
    assert not is_alive(sleeper)
    assert mounts_under(root) == []
    assert not root.exists()


@pytest.mark.debian_host
@pytest.mark.timeout(300)
def test_new_host_key_is_detected(fresh_debian_host: DebianTestHost) -> None:
    host = fresh_debian_host
    old_known_hosts = host.known_hosts()
    host.new_host_key()
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        run_async(ssh_run(host, "true", known_hosts=old_known_hosts))
    assert run_async(ssh_run(host, "true")).exit_status == 0


@pytest.mark.debian_host
@pytest.mark.timeout(300)
def test_stop_and_start_sshd(fresh_debian_host: DebianTestHost) -> None:
    host = fresh_debian_host
    host.stop_sshd()
    assert host.sshd_pid is None
    with pytest.raises(OSError):
        run_async(ssh_run(host, "true"))
    host.start_sshd()
    assert run_async(ssh_run(host, "echo back")).stdout == "back\n"


@pytest.mark.debian_host
@pytest.mark.timeout(300)
def test_failed_start_cleans_up(tmp_path: Path) -> None:
    host = DebianHost(tmp_path / "host", "not a key")

    def broken_sshd(port: int) -> None:
        raise RuntimeError("sshd broke")

    host._start_sshd_on_free_port = lambda: broken_sshd(0)  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="sshd broke"):
        host.start()
    assert mounts_under(tmp_path) == []
    assert not host.root.exists()


# ---------------------------------------------------------------------------
# Scripted SSH server
# ---------------------------------------------------------------------------


def test_rules_answer_in_insertion_order(scripted_ssh: ScriptedSSHTestServer) -> None:
    scripted_ssh.add_rule(r"^dpkg -s nginx", stdout="Status: install ok\n")
    scripted_ssh.add_rule(r"^dpkg", stderr="not installed\n", exit_status=1)

    async def scenario() -> list[asyncssh.SSHCompletedProcess]:
        async with scripted_ssh.connect() as conn:
            return [
                await conn.run("dpkg -s nginx", check=False),
                await conn.run("dpkg -s redis", check=False),
                await conn.run("rm -rf /", check=False),
            ]

    nginx, redis, unknown = run_async(scenario())
    assert (nginx.exit_status, nginx.stdout) == (0, "Status: install ok\n")
    assert (redis.exit_status, redis.stderr) == (1, "not installed\n")
    assert unknown.exit_status == 127
    assert unknown.stderr == "scripted: no rule for command\n"
    assert scripted_ssh.commands == ["dpkg -s nginx", "dpkg -s redis", "rm -rf /"]

    scripted_ssh.clear_rules()
    assert run_async(ssh_run(scripted_ssh, "dpkg -s nginx")).exit_status == 127


def test_times_and_delay(scripted_ssh: ScriptedSSHTestServer) -> None:
    scripted_ssh.add_rule("apt-get", exit_status=100, times=1)
    scripted_ssh.add_rule("apt-get", delay=0.3)

    async def scenario() -> tuple[int | None, int | None, float]:
        async with scripted_ssh.connect() as conn:
            first = await conn.run("apt-get install -y nginx", check=False)
            started = time.monotonic()
            second = await conn.run("apt-get install -y nginx", check=False)
            return first.exit_status, second.exit_status, time.monotonic() - started

    first, second, elapsed = run_async(scenario())
    assert (first, second) == (100, 0)
    assert elapsed >= 0.3


def test_stdin_is_recorded(scripted_ssh: ScriptedSSHTestServer) -> None:
    scripted_ssh.add_rule(r"^bash -s$", stdout="ran\n", wait_stdin=True)
    result = run_async(ssh_run(scripted_ssh, "bash -s", input="echo hi\n"))
    assert result.stdout == "ran\n"
    record = scripted_ssh.execs[0]
    assert (record.command, record.username, bytes(record.stdin)) == (
        "bash -s",
        "root",
        b"echo hi\n",
    )


def test_hang_never_answers(scripted_ssh: ScriptedSSHTestServer) -> None:
    scripted_ssh.add_rule("sleep", hang=True)
    scripted_ssh.add_rule("echo", stdout="still alive\n")

    async def scenario() -> str:
        async with scripted_ssh.connect() as conn:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(conn.run("sleep forever"), 0.5)
            # The connection itself still works.
            result = await conn.run("echo", check=False)
            return str(result.stdout)

    assert run_async(scenario()) == "still alive\n"
    assert scripted_ssh.commands == ["sleep forever", "echo"]


def test_disconnect_drops_the_connection(scripted_ssh: ScriptedSSHTestServer) -> None:
    scripted_ssh.add_rule("reboot", stdout="going down\n", disconnect=True)

    async def scenario() -> asyncssh.SSHCompletedProcess:
        async with scripted_ssh.connect() as conn:
            # asyncssh does not raise here: the process just has no exit status.
            result = await conn.run("reboot", check=False)
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.run("true")
            return result

    result = run_async(scenario())
    assert (result.exit_status, result.returncode) == (None, None)
    assert result.stdout == "going down\n"
    assert scripted_ssh.commands == ["reboot"]


def test_unauthorized_and_refused_keys(scripted_ssh: ScriptedSSHTestServer) -> None:
    scripted_ssh.add_rule("true")
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(asyncssh.PermissionDenied):
        run_async(ssh_run(scripted_ssh, "true", client_keys=[stranger]))
    assert run_async(ssh_run(scripted_ssh, "true")).exit_status == 0
    scripted_ssh.refuse_auth = True
    with pytest.raises(asyncssh.PermissionDenied):
        run_async(ssh_run(scripted_ssh, "true"))


def test_replace_host_key(scripted_ssh: ScriptedSSHTestServer) -> None:
    scripted_ssh.add_rule("true")
    old_known_hosts = asyncssh.import_known_hosts(scripted_ssh.known_hosts_line())
    old_line = scripted_ssh.host_key_line
    scripted_ssh.replace_host_key()
    assert scripted_ssh.host_key_line != old_line
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        run_async(ssh_run(scripted_ssh, "true", known_hosts=old_known_hosts))
    assert run_async(ssh_run(scripted_ssh, "true")).exit_status == 0


def test_silent_server_stops_answering(scripted_ssh: ScriptedSSHTestServer) -> None:
    scripted_ssh.add_rule("uptime", stdout="up\n")

    async def scenario() -> str:
        async with scripted_ssh.connect() as conn:
            scripted_ssh.silent()
            pending = asyncio.ensure_future(conn.run("uptime", check=False))
            done, _ = await asyncio.wait({pending}, timeout=0.5)
            assert not done
            assert scripted_ssh.commands == []
            scripted_ssh.silent(False)
            result = await asyncio.wait_for(pending, 5)
            return str(result.stdout)

    assert run_async(scenario()) == "up\n"


def test_silent_server_gives_new_connections_no_banner(
    scripted_ssh: ScriptedSSHTestServer,
) -> None:
    scripted_ssh.silent()
    with pytest.raises(asyncssh.Error):
        run_async(ssh_run(scripted_ssh, "true", login_timeout=0.5))


def test_stop_ends_hanging_requests() -> None:
    server = ScriptedSSHTestServer()
    server.start()
    server.add_rule("", hang=True)

    async def scenario() -> asyncssh.SSHCompletedProcess:
        loop = asyncio.get_running_loop()
        async with server.connect() as conn:
            pending = asyncio.ensure_future(conn.run("anything", check=False))
            await loop.run_in_executor(None, server.wait_for_command, "anything")
            await loop.run_in_executor(None, server.stop)
            return await asyncio.wait_for(pending, 5)

    assert run_async(scenario()).exit_status is None
