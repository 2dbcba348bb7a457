"""The bench host farm answers BrokeForge's real executor as a host would,
and fails loudly on what it cannot play (bench/hosts.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from bench.hosts import HostFarm
from brokeforge.packages.base import FACTS_SCRIPT, HostFacts
from brokeforge.servers.keys import generate_key_pair
from brokeforge.servers.ssh import (
    AuthenticationRefused,
    CommandResult,
    CommandTimedOut,
    SSHSession,
    SSHTarget,
)

KEY, PUBLIC = generate_key_pair()


@pytest.fixture
def farm() -> Iterator[HostFarm]:
    with HostFarm(2, PUBLIC, prefix="t") as running:
        yield running


def target(farm: HostFarm, index: int = 0, key: str = KEY) -> SSHTarget:
    host = farm.hosts[index]
    return SSHTarget(host.name, "127.0.0.1", host.port, "root", key, host.host_key_line)


def run(farm: HostFarm, script: str, timeout: float = 10) -> CommandResult:
    async def go() -> CommandResult:
        async with SSHSession(target(farm)) as session:
            return await session.run(script, timeout=timeout)

    return asyncio.run(go())


def test_it_answers_the_facts_script_as_a_debian_12_host(farm: HostFarm) -> None:
    before = time.time()

    result = run(farm, FACTS_SCRIPT)

    facts = HostFacts.parse(result.output)
    assert (facts.os_id, facts.version_id, facts.has_systemd) == ("debian", "12", False)
    seen = farm.hosts[0].execs
    assert [s.what for s in seen] == ["cat /etc/os-release"]
    assert before <= seen[0].at <= time.time()
    assert farm.hosts[1].execs == []


def test_it_plays_echo_and_sleep_and_fails_a_line_it_does_not_know(
    farm: HostFarm,
) -> None:
    played = run(farm, "echo 'bench install: 0.2 s'\nsleep 0.2\necho done\n")
    refused = run(farm, "echo start\nrm -rf /tmp/x\n")

    assert (played.exit_status, played.output) == (0, "bench install: 0.2 s\ndone\n")
    assert refused.exit_status == 127
    assert "cannot play 'rm -rf /tmp/x'" in refused.stderr_tail


def test_a_timeout_kills_the_played_script(farm: HostFarm) -> None:
    with pytest.raises(CommandTimedOut):
        run(farm, "sleep 30\n", timeout=1)

    sleep, kill = farm.hosts[0].execs
    assert (sleep.what, kill.what) == ("sleep 30", "kill")
    # The farm's thread ends the played script soon after answering the kill.
    deadline = time.monotonic() + 5
    while sleep.ended_at is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sleep.ended_at is not None and sleep.ended_at - sleep.at < 5
    assert sleep.exit_status == 143


def test_it_refuses_another_key(farm: HostFarm) -> None:
    other, _ = generate_key_pair()

    async def go() -> None:
        async with SSHSession(target(farm, key=other)):
            pass

    with pytest.raises(AuthenticationRefused):
        asyncio.run(go())
    assert farm.hosts[0].execs == []
