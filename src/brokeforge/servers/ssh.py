"""The SSH executor: run one script on a server, bounded in time.

Each script runs as `bash -c` under the remote `timeout` command. `timeout`
makes itself a process group leader, so the script and everything it starts
share one process group; the script's first line reports that group's id.
When the local deadline passes, a second channel kills the whole group, and
the remote `timeout` (set a few seconds later) is the backstop for a session
that can no longer be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import asyncssh

from brokeforge.lifecycle.errors import OperationFailure
from brokeforge.servers.keys import fingerprint

logger = logging.getLogger(__name__)

PGID_MARKER = "__brokeforge_pgid="
# The remote `timeout` fires this long after the local deadline, so the local
# side, which can kill the group and report, normally acts first.
REMOTE_TIMEOUT_SLACK = 3
KILL_TIMEOUT = 5.0
STDERR_TAIL_LINES = 12

# Runs before every script: report the process group, arm a dead-man's
# switch, then make every stage of the script (and of each pipeline in it)
# fail the whole script.
#
# The switch: a watcher holds the channel's stdin, to which BrokeForge never
# writes. It reads EOF only when the channel closes; if the script still
# runs then, its connection was lost (the worker was killed, the network
# dropped), so the watcher ends the script's process group instead of
# leaving it orphaned. The script itself reads /dev/null: nothing can wait
# for input.
PRELUDE = f"""\
read -r _ _ _ _ __bf_pgid _ < /proc/$$/stat && printf '{PGID_MARKER}%s\\n' \
"$__bf_pgid" >&2
exec 3<&0 </dev/null
( trap '' TERM HUP INT; cat <&3 >/dev/null 2>&1 || true
  if kill -0 $$ 2>/dev/null; then
    kill -TERM -- "-$__bf_pgid"; sleep 2; kill -KILL -- "-$__bf_pgid"
  fi ) >/dev/null 2>&1 &
exec 3<&-
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
"""

# Runs first when a script comes with input (`packages.base.Script.stdin`):
# exactly that many bytes are read from the channel into a file only root
# can read, named by $BF_INPUT and deleted when the script exits; the rest
# of the channel's stdin is the dead-man's switch above. A secret thus
# reaches the host without appearing on any command line.
INPUT_PRELUDE = """\
BF_INPUT=$(mktemp) || exit 1
trap 'rm -f "$BF_INPUT"' EXIT
head -c {size} > "$BF_INPUT" || exit 1
"""

# Pin the key an administrator is most likely to compare against first.
HOST_KEY_ALGORITHMS = [
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "rsa-sha2-512",
    "rsa-sha2-256",
]

OutputCallback = Callable[[str], Awaitable[None]]


class ConnectFailed(OperationFailure):
    reason_class = "connect_failed"


class AuthenticationRefused(OperationFailure):
    reason_class = "auth_refused"


class HostKeyChanged(OperationFailure):
    reason_class = "host_key_changed"


class ConnectionLost(OperationFailure):
    reason_class = "connection_lost"


class CommandFailed(OperationFailure):
    reason_class = "command_failed"


class CommandTimedOut(OperationFailure):
    reason_class = "timed_out"


@dataclass(frozen=True)
class SSHTarget:
    """Everything needed to reach one server, free of the database."""

    name: str
    host: str
    port: int
    user: str
    private_key: str
    pinned_host_key: str = ""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    output: str
    stderr_tail: str


def _consume_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class SSHSession:
    """One SSH connection to a server, used for the commands of an operation."""

    def __init__(
        self,
        target: SSHTarget,
        *,
        connect_timeout: float = 15.0,
        keepalive_interval: float = 15.0,
        keepalive_count_max: int = 3,
    ) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.keepalive_interval = keepalive_interval
        self.keepalive_count_max = keepalive_count_max
        self._conn: asyncssh.SSHClientConnection | None = None
        self.host_key = ""

    async def __aenter__(self) -> SSHSession:
        self._conn = await self._connect()
        key = self._conn.get_server_host_key()
        assert key is not None
        self.host_key = key.export_public_key("openssh").decode().strip()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._conn is not None:
            self._conn.abort() if exc else self._conn.close()
            self._conn = None

    async def _connect(self) -> asyncssh.SSHClientConnection:
        t = self.target
        key = asyncssh.import_private_key(t.private_key)
        known_hosts: (
            tuple[list[asyncssh.SSHKey], list[asyncssh.SSHKey], list[str]] | None
        ) = None
        if t.pinned_host_key:
            known_hosts = ([asyncssh.import_public_key(t.pinned_host_key)], [], [])
        try:
            return await asyncssh.connect(
                t.host,
                t.port,
                username=t.user,
                client_keys=[key],
                known_hosts=known_hosts,
                agent_path=None,
                config=None,
                preferred_auth="publickey",
                server_host_key_algs=HOST_KEY_ALGORITHMS,
                connect_timeout=self.connect_timeout,
                keepalive_interval=self.keepalive_interval,
                keepalive_count_max=self.keepalive_count_max,
            )
        except asyncssh.HostKeyNotVerifiable:
            raise HostKeyChanged(await self._host_key_changed_message()) from None
        except asyncssh.PermissionDenied:
            raise AuthenticationRefused(
                f"authentication refused by {t.address} for user {t.user}: "
                "is BrokeForge's public key in that user's authorized_keys?"
            ) from None
        except TimeoutError:
            raise ConnectFailed(
                f"could not connect to {t.address}: "
                f"no answer within {self.connect_timeout:g} s"
            ) from None
        except ConnectionRefusedError:
            raise ConnectFailed(
                f"could not connect to {t.address}: connection refused"
            ) from None
        except socket.gaierror as exc:
            raise ConnectFailed(
                f"could not connect to {t.address}: cannot resolve {t.host} "
                f"({exc.strerror})"
            ) from None
        except OSError as exc:
            raise ConnectFailed(
                f"could not connect to {t.address}: {exc.strerror or exc}"
            ) from None
        except asyncssh.Error as exc:
            raise ConnectFailed(
                f"could not connect to {t.address}: {exc.reason}"
            ) from None

    async def _host_key_changed_message(self) -> str:
        t = self.target
        expected = fingerprint(t.pinned_host_key)
        try:
            presented_key = await asyncio.wait_for(
                asyncssh.get_server_host_key(t.host, t.port), self.connect_timeout
            )
            presented = (
                presented_key.get_fingerprint("sha256") if presented_key else "?"
            )
        except (OSError, asyncssh.Error, TimeoutError):
            presented = "an unknown key"
        return (
            f"host key changed: {t.address} presented {presented}, but "
            f"{expected} is pinned for {t.name}; nothing was run. If the server "
            "was reinstalled, compare its key, then pin the new one with "
            f"`brokeforge server check {t.name} --repin`."
        )

    async def run(
        self,
        script: str,
        *,
        timeout: float,
        on_output: OutputCallback | None = None,
    ) -> CommandResult:
        """Run `script` under bash and return its result.

        Raises `CommandTimedOut` once `timeout` seconds have passed (after
        killing the remote process group) and `ConnectionLost` when the
        session dies. A non-zero exit status is returned, not raised.

        A script carrying a `stdin` attribute (`packages.base.Script`) gets
        that text in the file named by `$BF_INPUT` (see INPUT_PRELUDE).
        """
        assert self._conn is not None, "use SSHSession as an async context manager"
        remote_limit = int(timeout) + REMOTE_TIMEOUT_SLACK
        input_text: str = getattr(script, "stdin", "")
        prelude = PRELUDE
        if input_text:
            size = len(input_text.encode())
            prelude = INPUT_PRELUDE.format(size=size) + PRELUDE
        command = (
            f"exec timeout -k 5 {remote_limit} bash -c {shlex.quote(prelude + script)}"
        )
        output: list[str] = []
        stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        pgid: list[int] = []

        async def pump(stream: asyncssh.SSHReader[str], is_stderr: bool) -> None:
            async for raw in stream:
                # NUL cannot be stored in a PostgreSQL text column.
                line = raw.replace("\x00", "\ufffd")
                marker = line[len(PGID_MARKER) :].strip()
                is_marker = is_stderr and line.startswith(PGID_MARKER)
                if is_marker and not pgid and marker.isdigit():
                    pgid.append(int(marker))
                    continue
                output.append(line)
                if is_stderr and line.strip():
                    stderr_tail.append(line.rstrip("\n"))
                if on_output is not None:
                    await on_output(line)

        started = time.monotonic()
        try:
            # A server can accept the login and never open the channel: the
            # timeout covers starting the command, too.
            try:
                process = await asyncio.wait_for(
                    self._conn.create_process(
                        command, encoding="utf-8", errors="replace"
                    ),
                    timeout,
                )
            except TimeoutError:
                raise CommandTimedOut(
                    f"timed out after {timeout:.0f} s: the server never started "
                    "the command"
                ) from None
            if input_text:
                # A command that ends before reading its input says why in
                # its exit status and output below.
                with contextlib.suppress(BrokenPipeError):
                    process.stdin.write(input_text)
            # stdin stays open: closing it is the remote dead-man's switch.
            readers = asyncio.gather(
                pump(process.stdout, False), pump(process.stderr, True)
            )
            # Cut short by a timeout or a cancel, the readers end cancelled:
            # that outcome is expected and must not be reported as lost.
            readers.add_done_callback(_consume_outcome)
            try:
                remaining = max(timeout - (time.monotonic() - started), 0.1)
                await asyncio.wait_for(readers, remaining)
                completed = await asyncio.wait_for(process.wait(), KILL_TIMEOUT)
            except asyncio.CancelledError:
                # Cancelled from outside (a person's cancel, a worker
                # shutdown): the remote command must not outlive it.
                await self._kill_group(pgid[0] if pgid else None)
                process.close()
                raise
            except TimeoutError:
                await self._kill_group(pgid[0] if pgid else None)
                process.close()
                raise CommandTimedOut(
                    f"timed out after {timeout:.0f} s",
                    output_tail="".join(output[-STDERR_TAIL_LINES:]),
                ) from None
        except (asyncssh.DisconnectError, asyncssh.ChannelOpenError, OSError) as exc:
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            raise ConnectionLost(
                f"lost SSH connection to {self.target.name} "
                f"({self.target.address}): {reason}; the command may still "
                f"run there until its time limit ({remote_limit} s)",
                output_tail="".join(output[-STDERR_TAIL_LINES:]),
            ) from None

        status = completed.exit_status
        if status is None or status < 0:
            if not completed.exit_signal:
                # No exit status and no signal: the channel closed under us.
                raise ConnectionLost(
                    f"lost SSH connection to {self.target.name} "
                    f"({self.target.address}): the command ended without an "
                    "exit status",
                    output_tail="".join(output[-STDERR_TAIL_LINES:]),
                )
            status = 128
            stderr_tail.append(
                f"remote command killed by signal {completed.exit_signal[0]}"
            )
        return CommandResult(
            exit_status=status,
            output="".join(output),
            stderr_tail="\n".join(stderr_tail),
        )

    async def _kill_group(self, pgid: int | None) -> None:
        """Kill the remote process group; bounded, best effort."""
        if pgid is None or self._conn is None:
            return
        kill = f"kill -TERM -- -{pgid} 2>/dev/null; sleep 1; kill -KILL -- -{pgid}"
        try:
            await asyncio.wait_for(self._conn.run(kill, check=False), KILL_TIMEOUT)
        except (TimeoutError, asyncssh.Error, OSError):
            logger.warning(
                "could not kill remote process group %s on %s",
                pgid,
                self.target.name,
                extra={"action": "remote_kill_failed", "server": self.target.name},
            )
