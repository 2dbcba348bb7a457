"""Benchmark 5: 20 short commands on one server, BrokeForge vs `ssh` per command.

The server is the real Debian test host (tests/testhosts): a chroot running
OpenSSH's sshd on a free port of 127.0.0.1, made for this run and removed at
the end. Both sides log in as root with the same ed25519 key and check the
same pinned host key.

- `ssh` per command: 20 runs of `ssh -o BatchMode=yes -i KEY -p PORT
  root@127.0.0.1 CMD`, one after the other, each a new process, TCP
  connection, key exchange and login.
- BrokeForge: 20 `SSHSession`s in one event loop, one command each, as the
  consecutive operations of one worker process run them: the first opens the
  connection, the others borrow it from the pool. Each command also carries
  the executor's prelude (process group report, dead-man's switch, remote
  `timeout`), which plain `ssh` does not.

Each repetition starts from nothing (a new event loop, so a new pool): its
total includes BrokeForge's first connection, reported apart as well.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import asyncssh

from bench.common import Goal, Section, debian_version, seconds, spread, version
from brokeforge.servers.ssh import SSHSession, SSHTarget
from tests.testhosts.fixtures import DebianTestHost

#: Commands per repetition (the smoke test makes it smaller).
COMMANDS = 20
# Alternating: a command that does nothing and one that prints a line.
SCRIPTS = ["true", "uname -r"]
GOAL_FACTOR = 5.0


def script(index: int) -> str:
    return SCRIPTS[index % len(SCRIPTS)]


class Client:
    """The key files and target both sides use to reach the host."""

    def __init__(self, host: DebianTestHost, key: asyncssh.SSHKey, work: Path):
        self.host = host
        self.key_file = work / "id_ed25519"
        self.key_file.write_bytes(key.export_private_key())
        self.key_file.chmod(0o600)
        host_key = host.host_public_keys()["ssh-ed25519"]
        self.known_hosts = work / "known_hosts"
        self.known_hosts.write_text(f"[{host.host}]:{host.port} {host_key}\n")
        self.target = SSHTarget(
            name="bench",
            host=host.host,
            port=host.port,
            user="root",
            private_key=key.export_private_key().decode(),
            pinned_host_key=host_key,
        )

    def ssh_command(self, command: str) -> list[str]:
        return [
            "ssh",
            "-F",
            "/dev/null",  # no user or system config: no multiplexing
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "ControlMaster=no",
            "-i",
            str(self.key_file),
            "-p",
            str(self.host.port),
            f"root@{self.host.host}",
            command,
        ]


def ssh_per_command(client: Client) -> list[float]:
    """Seconds per command, each through a fresh `ssh` process."""
    times = []
    for index in range(COMMANDS):
        started = time.perf_counter()
        subprocess.run(
            client.ssh_command(script(index)),
            check=True,
            capture_output=True,
            timeout=60,
        )
        times.append(time.perf_counter() - started)
    return times


async def brokeforge_sessions(client: Client, *, reuse: bool) -> list[float]:
    """Seconds per command, one SSHSession each, all in this event loop."""
    times = []
    for index in range(COMMANDS):
        started = time.perf_counter()
        async with SSHSession(client.target, reuse=reuse) as session:
            result = await session.run(script(index), timeout=60)
        if result.exit_status != 0:
            raise RuntimeError(f"{script(index)!r} failed: {result.stderr_tail}")
        times.append(time.perf_counter() - started)
    return times


def repeat(measure: Callable[[], list[float]], times: int) -> list[list[float]]:
    return [measure() for _ in range(times)]


def totals(runs: list[list[float]]) -> list[float]:
    return [sum(run) for run in runs]


def run(quick: bool) -> Section:
    repetitions = 2 if quick else 5
    key = asyncssh.generate_private_key("ssh-ed25519")
    with tempfile.TemporaryDirectory(prefix="bench-ssh-reuse-") as tmp:
        work = Path(tmp)
        with DebianTestHost(work / "host", key) as host:
            client = Client(host, key, work)
            sshd_version = host.run(
                "dpkg-query -W -f='${Version}' openssh-server"
            ).stdout.strip()
            # One untimed round each, so neither side pays for cold caches.
            ssh_per_command(client)
            asyncio.run(brokeforge_sessions(client, reuse=True))

            plain = repeat(lambda: ssh_per_command(client), repetitions)
            pooled = repeat(
                lambda: asyncio.run(brokeforge_sessions(client, reuse=True)),
                repetitions,
            )
            unpooled = repeat(
                lambda: asyncio.run(brokeforge_sessions(client, reuse=False)),
                repetitions,
            )

    plain_total = statistics.median(totals(plain))
    pooled_total = statistics.median(totals(pooled))
    unpooled_total = statistics.median(totals(unpooled))
    first = [run[0] for run in pooled]
    later = [t for run in pooled for t in run[1:]]
    factor = plain_total / pooled_total

    header = ["way", f"{COMMANDS} commands (median)", "per command", "spread of totals"]
    rows = [
        [
            "`ssh` process per command",
            seconds(plain_total),
            seconds(plain_total / COMMANDS),
            spread(totals(plain)),
        ],
        [
            "BrokeForge executor, connection reused",
            seconds(pooled_total),
            seconds(pooled_total / COMMANDS),
            spread(totals(pooled)),
        ],
        [
            "BrokeForge executor, reuse off (`reuse=False`)",
            seconds(unpooled_total),
            seconds(unpooled_total / COMMANDS),
            spread(totals(unpooled)),
        ],
        [
            "  of which BrokeForge's first command (connect + login)",
            seconds(statistics.median(first)),
            "",
            spread(first),
        ],
        [
            "  BrokeForge's later commands (reused connection)",
            "",
            seconds(statistics.median(later)),
            spread(later),
        ],
    ]
    return Section(
        title="5. SSH reuse: 20 short commands on one server",
        header=header,
        rows=rows,
        goals=[
            Goal(
                text=f"SSH reuse at least {GOAL_FACTOR:g} times faster than a "
                "process per command",
                met=factor >= GOAL_FACTOR,
                figure=f"{factor:.1f} times ({seconds(pooled_total)} vs "
                f"{seconds(plain_total)})",
            )
        ],
        notes=[
            f"{COMMANDS} commands (`true` and `uname -r` in turn) on the real "
            f"Debian test host (sshd from openssh-server {sshd_version} in a "
            "chroot, on 127.0.0.1; `ssh` from openssh-client "
            f"{debian_version('openssh-client')}), "
            f"median of {repetitions} repetitions after one untimed round. "
            f"BrokeForge: one `SSHSession` per command in one event loop, as "
            "consecutive operations of one worker process (asyncssh "
            f"{version('asyncssh')}); every repetition starts with an empty "
            "pool, so its total includes the first connection.",
            "BrokeForge's commands carry its prelude (process group, "
            "dead-man's switch, remote `timeout`), plain `ssh` runs the "
            "command bare; both check the same pinned host key.",
            "A `ssh` process also pays for its own start and its key files; "
            "against the executor with reuse off (a new connection per "
            "command, no process start) reuse is "
            f"{unpooled_total / pooled_total:.1f} times faster.",
        ],
    )
