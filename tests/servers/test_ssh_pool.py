"""Connection reuse in the SSH executor: what the server sees, and when not.

The scripted SSH server counts the connections it accepts and can drop them
or fall silent; the real Debian test host shows the same through sshd's own
log ("Accepted publickey" once per connection).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import asyncssh
import pytest

from brokeforge.servers.ssh import (
    IDLE_SECONDS_SETTING,
    CommandResult,
    CommandTimedOut,
    ConnectionLost,
    ConnectionPool,
    HostKeyChanged,
    PoolKey,
    SSHSession,
    SSHTarget,
    idle_seconds,
)
from tests.testhosts.debian_host import pids_rooted_at
from tests.testhosts.fixtures import DebianTestHost, ScriptedSSHTestServer


def private_line(key: asyncssh.SSHKey) -> str:
    return key.export_private_key().decode()


def public_line(key: asyncssh.SSHKey) -> str:
    return key.export_public_key("openssh").decode().strip()


def scripted_target(server: ScriptedSSHTestServer) -> SSHTarget:
    return SSHTarget(
        name="scripted",
        host=server.host,
        port=server.port,
        user="root",
        private_key=private_line(server.client_key),
        pinned_host_key=server.host_key_line,
    )


async def run_once(
    target: SSHTarget, script: str = "uname", timeout: float = 10
) -> tuple[CommandResult, bool]:
    """One session with one command: its result, and whether it reused."""
    async with SSHSession(target, connect_timeout=5) as session:
        reused = session.reused
        return await session.run(script, timeout=timeout), reused


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def run(scenario: Callable[[], Awaitable[object]]) -> object:
    return asyncio.run(scenario())  # type: ignore[arg-type]


def test_two_sessions_in_a_row_share_one_connection(
    scripted_ssh: ScriptedSSHTestServer,
) -> None:
    scripted_ssh.add_rule("uname", stdout="Linux\n")
    target = scripted_target(scripted_ssh)

    async def scenario() -> list[tuple[CommandResult, bool]]:
        return [await run_once(target), await run_once(target)]

    (first, first_reused), (second, second_reused) = asyncio.run(scenario())

    assert (first.exit_status, first.output) == (0, "Linux\n")
    assert (second.exit_status, second.output) == (0, "Linux\n")
    assert (first_reused, second_reused) == (False, True)
    assert scripted_ssh.connections_accepted == 1
    assert len(scripted_ssh.commands) == 2


def test_sessions_at_once_share_connections_up_to_the_cap(
    scripted_ssh: ScriptedSSHTestServer,
) -> None:
    scripted_ssh.add_rule("work", stdout="done\n", delay=0.5)
    target = scripted_target(scripted_ssh)

    async def scenario() -> list[tuple[CommandResult, bool]]:
        return await asyncio.gather(*(run_once(target, "work") for _ in range(6)))

    results = asyncio.run(scenario())

    assert [result.output for result, _ in results] == ["done\n"] * 6
    # Four sessions per connection: six sessions at once need two.
    assert scripted_ssh.connections_accepted == 2


def test_a_connection_that_died_idle_is_replaced_before_the_first_command(
    scripted_ssh: ScriptedSSHTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    scripted_ssh.add_rule("uname", stdout="Linux\n")
    target = scripted_target(scripted_ssh)

    async def scenario() -> tuple[CommandResult, bool]:
        await run_once(target)
        # As a restarted server would: this loop has not run since, so the
        # pool has not noticed and lends the dead connection.
        scripted_ssh.drop_connections()
        return await run_once(target)

    result, reused = asyncio.run(scenario())

    assert reused, "the session should have been lent the dead connection"
    assert (result.exit_status, result.output) == (0, "Linux\n")
    assert scripted_ssh.connections_accepted == 2
    actions = [getattr(record, "action", "") for record in caplog.records]
    assert actions.count("ssh_reconnect") == 1
    assert len(scripted_ssh.commands) == 2


def test_a_connection_closed_while_idle_is_not_lent_again(
    scripted_ssh: ScriptedSSHTestServer,
) -> None:
    scripted_ssh.add_rule("uname", stdout="Linux\n")
    target = scripted_target(scripted_ssh)

    async def scenario() -> tuple[CommandResult, bool]:
        await run_once(target)
        scripted_ssh.drop_connections()
        await asyncio.sleep(0.3)  # the pool's loop sees the connection close
        return await run_once(target)

    result, reused = asyncio.run(scenario())

    assert not reused
    assert result.output == "Linux\n"
    assert scripted_ssh.connections_accepted == 2


def test_a_connection_lost_after_a_command_started_is_not_retried(
    scripted_ssh: ScriptedSSHTestServer,
) -> None:
    scripted_ssh.add_rule("uname", stdout="Linux\n")
    scripted_ssh.add_rule("second-step", stdout="ran\n")
    target = scripted_target(scripted_ssh)

    async def scenario() -> None:
        await run_once(target)
        async with SSHSession(target, connect_timeout=5) as session:
            assert session.reused
            await session.run("uname", timeout=10)
            scripted_ssh.drop_connections()
            await session.run("second-step", timeout=10)

    with pytest.raises(ConnectionLost, match="lost SSH connection to scripted"):
        asyncio.run(scenario())

    # The session never ran its later commands on another connection.
    assert not any("second-step" in c for c in scripted_ssh.commands)
    assert scripted_ssh.connections_accepted == 1


def test_a_session_pinning_another_host_key_never_gets_the_connection(
    scripted_ssh: ScriptedSSHTestServer,
) -> None:
    scripted_ssh.add_rule("uname", stdout="Linux\n")
    old = scripted_target(scripted_ssh)
    stranger = public_line(asyncssh.generate_private_key("ssh-ed25519"))

    async def scenario() -> tuple[bool, str]:
        await run_once(old)
        # The pooled connection to this address proved the old key; a
        # session pinning any other key must connect and be refused.
        with pytest.raises(HostKeyChanged) as refused:
            await run_once(replace(old, pinned_host_key=stranger))
        # The server is reinstalled: a session pinning its new key opens
        # a connection of its own rather than reuse the old key's.
        scripted_ssh.replace_host_key()
        _, reused = await run_once(scripted_target(scripted_ssh))
        return reused, str(refused.value)

    reused, refusal = asyncio.run(scenario())

    assert "host key changed" in refusal
    assert not reused
    # One command each for the old key and the new one; none for the stranger.
    assert len(scripted_ssh.commands) == 2
    assert scripted_ssh.connections_accepted >= 3


def test_another_client_key_gets_its_own_connection(
    scripted_ssh: ScriptedSSHTestServer,
) -> None:
    scripted_ssh.add_rule("uname", stdout="Linux\n")
    other_key = asyncssh.generate_private_key("ssh-ed25519")
    scripted_ssh.authorized_keys.append(public_line(other_key))
    target = scripted_target(scripted_ssh)

    async def scenario() -> list[bool]:
        reused = []
        for key in (target.private_key, private_line(other_key), target.private_key):
            _, was_reused = await run_once(replace(target, private_key=key))
            reused.append(was_reused)
        return reused

    assert asyncio.run(scenario()) == [False, False, True]
    assert scripted_ssh.connections_accepted == 2


def test_a_silent_server_still_ends_the_command_at_its_timeout(
    scripted_ssh: ScriptedSSHTestServer,
) -> None:
    scripted_ssh.add_rule("uname", stdout="Linux\n")
    target = scripted_target(scripted_ssh)

    async def scenario() -> tuple[float, int]:
        await run_once(target)
        scripted_ssh.silent()
        started = time.monotonic()
        with pytest.raises(CommandTimedOut, match="timed out after 2 s"):
            await run_once(target, timeout=2)
        elapsed = time.monotonic() - started
        return elapsed, ConnectionPool.current().open_connections()

    try:
        elapsed, pooled = asyncio.run(scenario())
    finally:
        scripted_ssh.silent(False)

    # Bounded by the command's own timeout (plus scheduling slack on a busy
    # machine), not by keepalives or the connect timeout.
    assert elapsed < 2 + 3
    assert pooled == 0, "a connection suspected dead went back to the pool"


def test_a_command_cut_short_on_a_silent_server_drops_the_connection(
    scripted_ssh: ScriptedSSHTestServer,
) -> None:
    scripted_ssh.add_rule("hang", stdout="started\n", hang=True)
    scripted_ssh.add_rule("uname", stdout="Linux\n")
    target = scripted_target(scripted_ssh)

    async def scenario() -> tuple[int, bool]:
        await run_once(target)
        async with SSHSession(target, connect_timeout=5) as session:
            task = asyncio.create_task(session.run("hang", timeout=2))
            await asyncio.sleep(0.5)
            scripted_ssh.silent()
            with pytest.raises(CommandTimedOut):
                await task
        pooled = ConnectionPool.current().open_connections()
        scripted_ssh.silent(False)
        _, reused = await run_once(target)
        return pooled, reused

    try:
        pooled, reused = asyncio.run(scenario())
    finally:
        scripted_ssh.silent(False)

    assert pooled == 0
    assert not reused
    assert scripted_ssh.connections_accepted == 2


def test_idle_connections_close_after_the_bound(
    scripted_ssh: ScriptedSSHTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(IDLE_SECONDS_SETTING, "0.3")
    scripted_ssh.add_rule("uname", stdout="Linux\n")
    target = scripted_target(scripted_ssh)

    async def scenario() -> tuple[int, int, bool]:
        await run_once(target)
        pool = ConnectionPool.current()
        held = pool.open_connections(PoolKey.of(target))
        await asyncio.sleep(1.0)
        after = pool.open_connections()
        _, reused = await run_once(target)
        return held, after, reused

    held, after, reused = asyncio.run(scenario())

    assert (held, after, reused) == (1, 0, False)
    assert scripted_ssh.connections_accepted == 2


def test_an_idle_bound_of_zero_turns_reuse_off(
    scripted_ssh: ScriptedSSHTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(IDLE_SECONDS_SETTING, "0")
    scripted_ssh.add_rule("uname", stdout="Linux\n")
    target = scripted_target(scripted_ssh)

    async def scenario() -> list[bool]:
        return [(await run_once(target))[1] for _ in range(2)]

    assert asyncio.run(scenario()) == [False, False]
    assert scripted_ssh.connections_accepted == 2


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "86400"])
def test_a_wrong_idle_bound_is_refused_clearly(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(IDLE_SECONDS_SETTING, value)
    with pytest.raises(ValueError, match="BROKEFORGE_SSH_IDLE_SECONDS must be"):
        idle_seconds()


def test_the_pool_closes_its_connections_when_the_loop_ends(
    scripted_ssh: ScriptedSSHTestServer,
) -> None:
    scripted_ssh.add_rule("uname", stdout="Linux\n")
    target = scripted_target(scripted_ssh)

    asyncio.run(run_once(target))

    assert wait_until(lambda: scripted_ssh.open_connections == 0)
    # The next loop has a pool of its own and connects again.
    _, reused = asyncio.run(run_once(target))
    assert not reused
    assert scripted_ssh.connections_accepted == 2


def test_an_unpinned_session_opens_and_closes_its_own_connection(
    scripted_ssh: ScriptedSSHTestServer,
) -> None:
    scripted_ssh.add_rule("uname", stdout="Linux\n")
    unpinned = replace(scripted_target(scripted_ssh), pinned_host_key="")

    async def scenario() -> tuple[int, str]:
        async with SSHSession(unpinned, connect_timeout=5) as session:
            await session.run("uname", timeout=10)
            presented = session.host_key
        return ConnectionPool.current().open_connections(), presented

    pooled, presented = asyncio.run(scenario())

    # Trust on first use stays out of the pool: what it trusted was not
    # pinned by anyone yet.
    assert pooled == 0
    assert presented == scripted_ssh.host_key_line


# -- the real Debian host ---------------------------------------------------------


def debian_target(host: DebianTestHost) -> SSHTarget:
    return SSHTarget(
        name="debian",
        host=host.host,
        port=host.port,
        user="root",
        private_key=private_line(host.client_key),
        pinned_host_key=host.host_public_keys()["ssh-ed25519"],
    )


def logins(host: DebianTestHost) -> int:
    return host.sshd_log.read_text(errors="replace").count("Accepted publickey")


def sshd_pids(root: Path) -> list[int]:
    pids = []
    for pid in pids_rooted_at(root):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm == "sshd":
            pids.append(pid)
    return pids


@pytest.mark.debian_host
@pytest.mark.timeout(600)
def test_two_sessions_on_the_debian_host_log_in_once(
    debian_host: DebianTestHost,
) -> None:
    target = debian_target(debian_host)
    before = logins(debian_host)

    async def scenario() -> list[tuple[CommandResult, bool]]:
        return [await run_once(target, "uname -s"), await run_once(target, "true")]

    (first, first_reused), (second, second_reused) = asyncio.run(scenario())

    assert (first.exit_status, first.output) == (0, "Linux\n")
    assert second.exit_status == 0
    assert (first_reused, second_reused) == (False, True)
    assert logins(debian_host) - before == 1


@pytest.mark.debian_host
@pytest.mark.timeout(600)
def test_a_restarted_debian_host_is_reconnected(
    debian_host: DebianTestHost, caplog: pytest.LogCaptureFixture
) -> None:
    target = debian_target(debian_host)
    before = logins(debian_host)

    async def scenario() -> tuple[CommandResult, bool]:
        await run_once(target, "true")
        # Every sshd of the host goes, the listener and each connection's,
        # as in a reboot; then the listener comes back on the same port.
        debian_host.stop_sshd()
        for pid in sshd_pids(debian_host.root):
            os.kill(pid, signal.SIGKILL)
        debian_host.start_sshd()
        return await run_once(target, "uname -s")

    result, reused = asyncio.run(scenario())

    assert (result.exit_status, result.output) == (0, "Linux\n")
    assert reused, "the session should have been lent the dead connection"
    assert logins(debian_host) - before == 2
    assert "connecting again" in caplog.text


@pytest.mark.debian_host
@pytest.mark.timeout(600)
def test_the_ssh_reuse_benchmark_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A smoke test of bench/ssh_reuse.py (no timing asserted)."""
    from bench import ssh_reuse

    monkeypatch.setattr(ssh_reuse, "COMMANDS", 3)
    section = ssh_reuse.run(quick=True)

    assert [row[0] for row in section.rows][:3] == [
        "`ssh` process per command",
        "BrokeForge executor, connection reused",
        "BrokeForge executor, reuse off (`reuse=False`)",
    ]
    assert all(cell.endswith(("ms", " s")) for cell in section.rows[0][1:3])
    assert len(section.goals) == 1
    assert "openssh-server 1:9" in section.notes[0]


def test_operations_on_a_long_lived_loop_in_another_thread_share_a_connection(
    scripted_ssh: ScriptedSSHTestServer,
) -> None:
    """As a worker runs them: each operation handed to one loop in a thread."""
    scripted_ssh.add_rule("uname", stdout="Linux\n")
    target = scripted_target(scripted_ssh)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def wind_down() -> None:
        # What asyncio.run does at its end: cancel what is left, the pool's
        # closer among it, and wait for it.
        left = asyncio.all_tasks() - {asyncio.current_task()}
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)

    try:
        results = [
            asyncio.run_coroutine_threadsafe(run_once(target), loop).result(30)
            for _ in range(3)
        ]
        asyncio.run_coroutine_threadsafe(wind_down(), loop).result(30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

    assert [reused for _, reused in results] == [False, True, True]
    assert scripted_ssh.connections_accepted == 1
    assert wait_until(lambda: scripted_ssh.open_connections == 0)
