"""A farm of bench hosts: many SSH servers on loopback, one event loop.

Each `BenchHost` is a real asyncssh server on 127.0.0.1 with a port and a
host key of its own. It accepts one client key (the one the benchmark
registers its servers with) and answers BrokeForge's real remote protocol
without running anything: the command is the executor's
`exec timeout ... bash -c '<prelude + script>'`; the farm takes the script
out of it, drops the executor's prelude and plays the rest:

- a script is played line by line, knowing `echo` (to stdout, or stderr
  with `>&2`), `sleep N` (waited for without blocking the loop), `exit N`,
  `true` (the connection check's command),
  and the two lines of the facts script (`packages.base.FACTS_SCRIPT`):
  `cat /etc/os-release` answers Debian 12, the systemd test says there is
  no systemd; a line it does not know fails the script with exit status 127
  and says which line, so a kind the farm cannot play is reported, never
  passed;
- the executor's `kill -TERM -- -PGID ...` (sent on a timeout or a cancel)
  ends the played script with that process group id.

Like the real prelude's dead-man's switch, a played script ends when its
channel closes. Every exec request is recorded with the wall-clock time
(`time.time()`) it arrived and when it ended, every accepted connection
with the time it was accepted, which is what the dispatch
and fleet benchmarks measure with.

All hosts share one event loop in one thread, so 200 of them cost a few
tens of MB, and BrokeForge's own processes (subprocesses of the benchmark)
are measured apart from the farm.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import shlex
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

import asyncssh

from brokeforge.servers.ssh import PGID_MARKER, PRELUDE

LOOPBACK = "127.0.0.1"
OS_RELEASE = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
"""
CANNOT_PLAY = 127
_SLEEP = re.compile(r"sleep (\d+(?:\.\d+)?)")
_EXIT = re.compile(r"exit (\d+)")
_KILL = re.compile(r"kill -TERM -- -(\d+)")
#: The facts script's test for systemd (this host has none).
_SYSTEMD_TEST = "if [ -d /run/systemd/system ];"

_T = TypeVar("_T")


@dataclass
class ExecSeen:
    """One exec request a host received."""

    #: Wall-clock time (time.time()) the request arrived.
    at: float
    #: The first line of the played script ("kill" for a kill command).
    what: str
    ended_at: float | None = None
    exit_status: int | None = None


@dataclass
class BenchHost:
    name: str
    host_key: asyncssh.SSHKey
    port: int = 0
    execs: list[ExecSeen] = field(default_factory=list)
    #: Wall-clock times TCP connections were accepted.
    connections: list[float] = field(default_factory=list)

    @property
    def host_key_line(self) -> str:
        return self.host_key.export_public_key("openssh").decode().strip()

    def first_exec_after(self, moment: float) -> ExecSeen | None:
        return next((seen for seen in self.execs if seen.at >= moment), None)


def script_of(command: str) -> str | None:
    """The script inside the executor's command, its prelude removed.

    None when the command does not have the executor's shape.
    """
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    if (
        len(words) != 8
        or words[:2] != ["exec", "timeout"]
        or words[5:7]
        != [
            "bash",
            "-c",
        ]
    ):
        return None
    body = words[7]
    return body.removeprefix(PRELUDE) if body.startswith(PRELUDE) else None


class HostFarm:
    """`count` bench hosts accepting `client_key` (an OpenSSH public key line)."""

    def __init__(self, count: int, client_key: str, *, prefix: str = "bench") -> None:
        self.client_key = asyncssh.import_public_key(client_key)
        self.hosts = [
            BenchHost(
                name=f"{prefix}-{index:03d}",
                host_key=asyncssh.generate_private_key("ssh-ed25519"),
            )
            for index in range(1, count + 1)
        ]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._acceptors: list[asyncssh.SSHAcceptor] = []
        self._pgids = itertools.count(10_000)
        self._running: dict[int, asyncio.Task[int]] = {}
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name="bench-hosts", daemon=True
        )
        self._thread.start()
        try:
            self._call(self._listen())
        except BaseException:
            self.stop()
            raise

    async def _listen(self) -> None:
        for host in self.hosts:
            acceptor = await asyncssh.create_server(
                lambda host=host: _Callbacks(self, host),
                LOOPBACK,
                0,
                server_host_keys=[host.host_key],
                encoding=None,
                process_factory=lambda process, host=host: self._handle(host, process),
            )
            self._acceptors.append(acceptor)
            host.port = acceptor.get_port()

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._loop.is_running():
            with contextlib.suppress(Exception):
                self._call(self._close(), timeout=15)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop = self._thread = None

    async def _close(self) -> None:
        for acceptor in self._acceptors:
            acceptor.close()
        for acceptor in self._acceptors:
            await acceptor.wait_closed()
        others = asyncio.all_tasks() - {asyncio.current_task()}
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def _call(self, coro: Coroutine[Any, Any, _T], timeout: float = 60) -> _T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- what the benchmarks read ------------------------------------------------

    def wait_exec(self, host: BenchHost, after: float, timeout: float) -> ExecSeen:
        """The first exec request `host` got at or after `after` (wall clock)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                seen = host.first_exec_after(after)
            if seen is not None:
                return seen
            if time.monotonic() > deadline:
                raise TimeoutError(f"{host.name} got no command within {timeout} s")
            time.sleep(0.002)

    def all_execs(self) -> list[ExecSeen]:
        with self._lock:
            return [seen for host in self.hosts for seen in host.execs]

    # -- playing the remote side ---------------------------------------------------

    async def _handle(
        self, host: BenchHost, process: asyncssh.SSHServerProcess[bytes]
    ) -> None:
        seen = ExecSeen(at=time.time(), what="")
        command = process.command or ""
        with self._lock:
            host.execs.append(seen)
        kill = _KILL.match(command)
        if kill:
            seen.what = "kill"
            task = self._running.get(int(kill.group(1)))
            if task is not None:
                task.cancel()
            self._finish(process, seen, 0)
            return
        script = script_of(command)
        if script is None:
            seen.what = command[:60]
            process.stderr.write(b"bench host: not an executor command\n")
            self._finish(process, seen, CANNOT_PLAY)
            return
        seen.what = (script.splitlines() or [""])[0]
        pgid = next(self._pgids)
        process.stderr.write(f"{PGID_MARKER}{pgid}\n".encode())
        play = asyncio.create_task(self._play(script, process))
        self._running[pgid] = play
        # The dead-man's switch: the channel closing ends the script.
        closed = asyncio.create_task(_read_until_eof(process))
        try:
            await asyncio.wait({play, closed}, return_when=asyncio.FIRST_COMPLETED)
            if not play.done():
                play.cancel()
            try:
                status = await play
            except asyncio.CancelledError:
                status = 143  # as if ended by SIGTERM
        finally:
            closed.cancel()
            self._running.pop(pgid, None)
        self._finish(process, seen, status)

    def _finish(
        self, process: asyncssh.SSHServerProcess[bytes], seen: ExecSeen, status: int
    ) -> None:
        seen.ended_at, seen.exit_status = time.time(), status
        if not process.is_closing():
            process.exit(status)

    async def _play(
        self, script: str, process: asyncssh.SSHServerProcess[bytes]
    ) -> int:
        for raw in script.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line == "cat /etc/os-release":
                process.stdout.write(OS_RELEASE.encode())
            elif line.startswith(_SYSTEMD_TEST):
                process.stdout.write(b"BROKEFORGE_INIT=other\n")
            elif line.startswith("echo "):
                to_stderr = line.endswith(">&2")
                words = shlex.split(line.removesuffix(">&2"))
                text = (" ".join(words[1:]) + "\n").encode()
                (process.stderr if to_stderr else process.stdout).write(text)
            elif line == "true":  # the connection check's command
                continue
            elif match := _SLEEP.fullmatch(line):
                await asyncio.sleep(float(match.group(1)))
            elif match := _EXIT.fullmatch(line):
                return int(match.group(1))
            else:
                process.stderr.write(f"bench host: cannot play {line!r}\n".encode())
                return CANNOT_PLAY
        return 0


async def _read_until_eof(process: asyncssh.SSHServerProcess[bytes]) -> None:
    with contextlib.suppress(asyncssh.Error, OSError, asyncio.IncompleteReadError):
        while await process.stdin.read(65536):
            pass


class _Callbacks(asyncssh.SSHServer):
    """Public key login with the farm's one client key, any user name."""

    def __init__(self, farm: HostFarm, host: BenchHost) -> None:
        self._farm = farm
        self._host = host

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        with self._farm._lock:
            self._host.connections.append(time.time())

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return key.public_data == self._farm.client_key.public_data
