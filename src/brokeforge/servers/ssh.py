"""The SSH executor: run one script on a server, bounded in time.

Each script runs as `bash -c` under the remote `timeout` command. `timeout`
makes itself a process group leader, so the script and everything it starts
share one process group; the script's first line reports that group's id.
When the local deadline passes, a second channel kills the whole group, and
the remote `timeout` (set a few seconds later) is the backstop for a session
that can no longer be reached.

Sessions whose server has a pinned host key borrow their connection from the
event loop's `ConnectionPool`, so consecutive operations on one server reuse
one SSH connection; each command still gets its own channel, and with it its
own dead-man's switch (see "Connection reuse" in docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shlex
import socket
import threading
import time
import weakref
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
# leaving it orphaned. The watcher runs in a session of its own, outside
# that group: a kill of the group then reaches only the script, and the
# group is gone as soon as the script is. The script itself reads
# /dev/null: nothing can wait for input.
PRELUDE = f"""\
read -r _ _ _ _ __bf_pgid _ < /proc/$$/stat && printf '{PGID_MARKER}%s\\n' \
"$__bf_pgid" >&2
exec 3<&0 </dev/null
setsid bash -c 'trap "" TERM HUP INT; cat >/dev/null 2>&1 || true
  if kill -0 "$1" 2>/dev/null; then
    kill -TERM -- "-$2"; sleep 2; kill -KILL -- "-$2"
  fi' _ $$ "$__bf_pgid" <&3 >/dev/null 2>&1 &
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


# -- connection reuse -------------------------------------------------------------

IDLE_SECONDS_SETTING = "BROKEFORGE_SSH_IDLE_SECONDS"
DEFAULT_IDLE_SECONDS = 60.0
MAX_IDLE_SECONDS = 3600.0
# A session has at most two channels open at once (its command and, while
# stopping it, the kill), so four sessions on one connection stay under
# OpenSSH's default of ten channels per connection (`MaxSessions`).
SESSIONS_PER_CONNECTION = 4
# At the end of its event loop the pool waits this long for the servers to
# take their disconnects, then drops what is left.
CLOSE_WAIT = 1.0

Connector = Callable[[], Awaitable[asyncssh.SSHClientConnection]]


def idle_seconds() -> float:
    """How long an unused connection waits for the next session.

    Read from $BROKEFORGE_SSH_IDLE_SECONDS (default 60); 0 turns reuse off
    between sessions: a connection closes as soon as nobody uses it.
    """
    raw = os.environ.get(IDLE_SECONDS_SETTING, "").strip()
    if not raw:
        return DEFAULT_IDLE_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_IDLE_SECONDS:  # NaN fails this too
        raise ValueError(
            f"{IDLE_SECONDS_SETTING} must be a number of seconds from 0 to "
            f"{MAX_IDLE_SECONDS:g}, not {raw!r}"
        )
    return value


@dataclass(frozen=True)
class PoolKey:
    """Everything that decides whether a connection may serve a session.

    Sessions share a connection only when all of it is equal: the address,
    the user, the client key (by digest: the pool keeps no second copy of
    the secret) and the pinned host key, which the connection verified
    when it was opened.
    """

    host: str
    port: int
    user: str
    client_key: str
    host_key: str

    @classmethod
    def of(cls, target: SSHTarget) -> PoolKey:
        # A key line's comment, if any, does not change the key.
        host_key = " ".join(target.pinned_host_key.split()[:2])
        client_key = hashlib.sha256(target.private_key.encode()).hexdigest()
        return cls(target.host, target.port, target.user, client_key, host_key)


class PooledConnection:
    """One connection of the pool and how many sessions are borrowing it."""

    def __init__(self, key: PoolKey, conn: asyncssh.SSHClientConnection) -> None:
        self.key = key
        self.conn = conn
        self.sessions = 0
        #: No session gets it again; it closes when the last one returns it.
        self.retired = False
        self.idle_timer: asyncio.TimerHandle | None = None

    @property
    def has_room(self) -> bool:
        return (
            not self.retired
            and not self.conn.is_closed()
            and self.sessions < SESSIONS_PER_CONNECTION
        )


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ConnectionPool] = (
    weakref.WeakKeyDictionary()
)
_pools_lock = threading.Lock()
# Strong references to the tasks that close each pool with its loop.
_closers: set[asyncio.Task[None]] = set()


class ConnectionPool:
    """The SSH connections of one event loop, lent to that loop's sessions.

    A session borrows a connection for its whole life and opens one channel
    per command on it. Up to SESSIONS_PER_CONNECTION sessions share one
    connection at once; beyond that another is opened. A connection nobody
    uses closes after `idle_seconds`. A session that suspects its connection
    is dead returns it as such: it is dropped at once and never lent again.
    When the loop ends (asyncio.run cancels the tasks left), the pool closes
    every connection it holds.
    """

    def __init__(self, idle: float) -> None:
        self.idle_seconds = idle
        #: Connections this pool has opened so far.
        self.opened = 0
        self._entries: dict[PoolKey, list[PooledConnection]] = {}
        # A connection being opened per key: later sessions wait for it
        # rather than open one more at the same moment. Its result is the
        # failure that ended the attempt, or None.
        self._connecting: dict[PoolKey, asyncio.Future[OperationFailure | None]] = {}
        self._closed = False

    @classmethod
    def current(cls) -> ConnectionPool:
        """The pool of the running event loop, made on first use."""
        loop = asyncio.get_running_loop()
        with _pools_lock:
            pool = _pools.get(loop)
            if pool is None or pool._closed:
                pool = cls(idle_seconds())
                _pools[loop] = pool
                closer = loop.create_task(pool._close_with(loop))
                _closers.add(closer)
                closer.add_done_callback(_closers.discard)
        return pool

    async def _close_with(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            await loop.create_future()  # never set: ends when the loop ends
        finally:
            with _pools_lock:
                if _pools.get(loop) is self:
                    del _pools[loop]
            await self.close()

    def open_connections(self, key: PoolKey | None = None) -> int:
        """How many connections the pool holds (for `key`, or in all)."""
        lists = [self._entries.get(key, [])] if key else self._entries.values()
        return sum(1 for entries in lists for e in entries if not e.conn.is_closed())

    async def acquire(
        self, key: PoolKey, connect: Connector, *, fresh: bool = False
    ) -> tuple[PooledConnection, bool]:
        """Lend a connection for `key`; True with it if it was just opened.

        An open connection with room is lent first, unless `fresh` asks for
        a new one. Errors of `connect` (ConnectFailed, HostKeyChanged, ...)
        reach the caller, and the sessions that were waiting for that same
        attempt.
        """
        while not fresh:
            entry = self._find(key)
            if entry is not None:
                self._lend(entry)
                return entry, False
            pending = self._connecting.get(key)
            if pending is None:
                break
            ahead = await asyncio.shield(pending)
            if ahead is not None:
                # The same server just refused the session ahead of this one.
                raise type(ahead)(ahead.message) from None

        done: asyncio.Future[OperationFailure | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._connecting.setdefault(key, done)
        failure: OperationFailure | None = None
        try:
            conn = await connect()
        except OperationFailure as exc:
            failure = exc
            raise
        finally:
            if self._connecting.get(key) is done:
                del self._connecting[key]
            done.set_result(failure)
        self.opened += 1
        entry = PooledConnection(key, conn)
        if self._closed:
            entry.retired = True  # the loop is ending: lend it, keep nothing
        else:
            self._entries.setdefault(key, []).append(entry)
        self._lend(entry)
        return entry, True

    def release(self, entry: PooledConnection, *, dead: bool = False) -> None:
        """Take a connection back; `dead` drops it at once.

        A dead connection is aborted even while other sessions use it: their
        commands cannot get through either, and they learn it now rather
        than at their time limit.
        """
        entry.sessions -= 1
        if dead:
            self._retire(entry)
            entry.conn.abort()
            return
        if self._closed or self.idle_seconds == 0 or entry.conn.is_closed():
            self._retire(entry)
        if entry.sessions > 0:
            return
        if entry.retired:
            entry.conn.close()
            return
        entry.idle_timer = asyncio.get_running_loop().call_later(
            self.idle_seconds, self._expire, entry
        )

    async def close(self) -> None:
        """Close every connection; sessions still using one keep it until they end."""
        self._closed = True
        entries = [e for entries in self._entries.values() for e in entries]
        for entry in entries:
            self._retire(entry)
        idle = [e for e in entries if e.sessions == 0]
        for entry in idle:
            entry.conn.close()
        if idle:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(e.conn.wait_closed() for e in idle)), CLOSE_WAIT
                )
            for entry in idle:
                entry.conn.abort()
            await asyncio.sleep(0)  # let the transports finish closing

    def _find(self, key: PoolKey) -> PooledConnection | None:
        for entry in list(self._entries.get(key, [])):
            if entry.conn.is_closed():
                # It closed while idle: the server went away, or its
                # keepalives went unanswered.
                self._retire(entry)
            elif entry.has_room:
                return entry
        return None

    def _lend(self, entry: PooledConnection) -> None:
        if entry.idle_timer is not None:
            entry.idle_timer.cancel()
            entry.idle_timer = None
        entry.sessions += 1

    def _retire(self, entry: PooledConnection) -> None:
        entry.retired = True
        if entry.idle_timer is not None:
            entry.idle_timer.cancel()
            entry.idle_timer = None
        entries = self._entries.get(entry.key, [])
        if entry in entries:
            entries.remove(entry)
            if not entries:
                del self._entries[entry.key]

    def _expire(self, entry: PooledConnection) -> None:
        entry.idle_timer = None
        if entry.sessions == 0 and not entry.retired:
            self._retire(entry)
            entry.conn.close()
            logger.debug(
                "closed the idle SSH connection to %s:%s",
                entry.key.host,
                entry.key.port,
                extra={"action": "ssh_idle_closed"},
            )


class SSHSession:
    """The commands of one operation on one server, over one SSH connection.

    With a pinned host key the connection comes from the event loop's
    `ConnectionPool` and goes back to it at the end (`reuse=False` opts
    out); without one (the first contact, a repin) the session opens its
    own connection, trusting the key presented, and closes it.
    """

    def __init__(
        self,
        target: SSHTarget,
        *,
        connect_timeout: float = 15.0,
        keepalive_interval: float = 15.0,
        keepalive_count_max: int = 3,
        reuse: bool = True,
    ) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.keepalive_interval = keepalive_interval
        self.keepalive_count_max = keepalive_count_max
        self.reuse = reuse
        self._conn: asyncssh.SSHClientConnection | None = None
        self._pool: ConnectionPool | None = None
        self._lease: PooledConnection | None = None
        # Whether the connection was opened for this session, how many
        # commands started on it, and whether it may be dead.
        self._opened_here = True
        self._commands_started = 0
        self._suspect = False
        self.host_key = ""

    async def __aenter__(self) -> SSHSession:
        if self.reuse and self.target.pinned_host_key:
            self._pool = ConnectionPool.current()
            await self._borrow()
        else:
            self._conn = await self._connect()
        assert self._conn is not None
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
        if self._lease is not None:
            assert self._pool is not None
            # Every channel of this session is closed by now (see `run`):
            # unless the connection itself is in doubt, the next session
            # may use it, whatever the operation's outcome.
            self._pool.release(self._lease, dead=self._suspect)
            self._lease = None
        elif self._conn is not None:
            self._conn.abort() if exc or self._suspect else self._conn.close()
        self._conn = None

    @property
    def reused(self) -> bool:
        """Whether the session runs on a connection an earlier one opened."""
        return not self._opened_here

    async def _borrow(self, *, fresh: bool = False) -> None:
        assert self._pool is not None
        self._lease, self._opened_here = await self._pool.acquire(
            PoolKey.of(self.target), self._connect, fresh=fresh
        )
        self._conn = self._lease.conn
        if not self._opened_here:
            logger.debug(
                "reusing an SSH connection to %s",
                self.target.address,
                extra={"action": "ssh_reused", "server": self.target.name},
            )

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

        However it ends, the command's channel is closed when this returns,
        so the connection can serve other commands afterwards.
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
            process = await self._start(command, timeout, started)
            self._commands_started += 1
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
                await self._stop(process, pgid[0] if pgid else None)
                raise
            except TimeoutError:
                await self._stop(process, pgid[0] if pgid else None)
                raise CommandTimedOut(
                    f"timed out after {timeout:.0f} s",
                    output_tail="".join(output[-STDERR_TAIL_LINES:]),
                ) from None
            except BaseException:
                # Something on this side failed (saving the output): closing
                # the channel fires the command's dead-man's switch.
                readers.cancel()
                process.close()
                raise
        except (asyncssh.DisconnectError, asyncssh.ChannelOpenError, OSError) as exc:
            self._suspect = True
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
                self._suspect = True
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

    async def _start(
        self, command: str, timeout: float, started: float
    ) -> asyncssh.SSHClientProcess[str]:
        """Open the command's channel, within the command's `timeout`.

        A server can accept the login and never open the channel: the
        timeout covers starting the command, too. On a connection an earlier
        session left in the pool, a channel that cannot be opened means the
        connection died meanwhile (the server restarted, the network
        dropped): it is dropped and, as no command of this session has
        started yet, the session connects again, once.
        """
        assert self._conn is not None
        may_reconnect = (
            self._lease is not None
            and not self._opened_here
            and self._commands_started == 0
        )
        # A live connection opens a channel in a round trip; a dead one
        # that nothing noticed yet would otherwise hold the whole timeout.
        limit = min(timeout, self.connect_timeout) if may_reconnect else timeout
        try:
            return await asyncio.wait_for(self._open(command), limit)
        except TimeoutError as exc:
            if not may_reconnect or time.monotonic() - started >= timeout:
                self._suspect = True
                raise CommandTimedOut(
                    f"timed out after {timeout:.0f} s: the server never started "
                    "the command"
                ) from None
            failure: BaseException = exc
        except (asyncssh.DisconnectError, asyncssh.ChannelOpenError, OSError) as exc:
            if not may_reconnect:
                raise
            failure = exc

        assert self._pool is not None and self._lease is not None
        logger.info(
            "the SSH connection to %s kept for reuse is gone (%s); connecting again",
            self.target.address,
            getattr(failure, "reason", None) or type(failure).__name__,
            extra={"action": "ssh_reconnect", "server": self.target.name},
        )
        self._pool.release(self._lease, dead=True)
        self._lease, self._conn = None, None
        try:
            remaining = timeout - (time.monotonic() - started)
            await asyncio.wait_for(self._borrow(fresh=True), max(remaining, 0.1))
            assert self._conn is not None
            remaining = timeout - (time.monotonic() - started)
            return await asyncio.wait_for(self._open(command), max(remaining, 0.1))
        except TimeoutError:
            self._suspect = True
            raise CommandTimedOut(
                f"timed out after {timeout:.0f} s: the server never started the command"
            ) from None

    async def _open(self, command: str) -> asyncssh.SSHClientProcess[str]:
        assert self._conn is not None
        return await self._conn.create_process(
            command, encoding="utf-8", errors="replace"
        )

    async def _stop(
        self, process: asyncssh.SSHClientProcess[str], pgid: int | None
    ) -> None:
        """End a command cut short: kill its group, close its channel.

        When the kill cannot be delivered, the connection is in doubt: the
        session then drops it rather than return it to the pool, and with
        it every channel, which fires the dead-man's switch of any command
        still running on it.
        """
        if not await self._kill_group(pgid):
            self._suspect = True
        process.close()

    async def _kill_group(self, pgid: int | None) -> bool:
        """Kill the remote process group; bounded, best effort.

        True once the kill ran on the server, which also shows that the
        connection still answers.
        """
        if pgid is None or self._conn is None:
            return False
        # TERM, then KILL only if the group outlives a second: most scripts
        # end at once, and their operation ends as soon as they have.
        kill = (
            f"kill -TERM -- -{pgid} 2>/dev/null; "
            f"for _ in {' '.join(['0'] * 50)}; do "
            f"kill -0 -- -{pgid} 2>/dev/null || exit 0; sleep 0.02; done; "
            f"kill -KILL -- -{pgid}"
        )
        try:
            await asyncio.wait_for(self._conn.run(kill, check=False), KILL_TIMEOUT)
        except (TimeoutError, asyncssh.Error, OSError):
            logger.warning(
                "could not kill remote process group %s on %s",
                pgid,
                self.target.name,
                extra={"action": "remote_kill_failed", "server": self.target.name},
            )
            return False
        return True
