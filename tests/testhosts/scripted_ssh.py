"""A scripted SSH server: the fast test double for the product's SSH layer.

:class:`ScriptedSSHServer` is a real SSH server (asyncssh) on 127.0.0.1 that
runs nothing: every exec request is recorded and answered from a list of
rules.  It runs its own event loop in a background thread, so it works with
synchronous tests and with clients running on another event loop.

Clients do not talk to asyncssh directly but through a small TCP relay in the
same thread.  The relay is what makes :meth:`ScriptedSSHServer.silent`
possible: it can stop moving bytes in both directions while keeping every TCP
connection open, which is what a hung or firewalled server looks like.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import asyncssh

LOOPBACK = "127.0.0.1"
NO_RULE_STDERR = "scripted: no rule for command"
NO_RULE_EXIT_STATUS = 127

_T = TypeVar("_T")


@dataclass
class Rule:
    """How to answer commands whose text matches ``pattern`` (``re.search``).

    ``times`` limits how often the rule applies (None: always); once used up
    it is skipped, so a later rule can script a retry's different answer.
    """

    pattern: re.Pattern[str]
    stdout: bytes = b""
    stderr: bytes = b""
    exit_status: int = 0
    hang: bool = False
    disconnect: bool = False
    delay: float = 0.0
    wait_stdin: bool = False
    times: int | None = None
    used: int = 0


@dataclass
class ExecRecord:
    """One exec request as the server saw it.

    ``stdin`` grows while the channel is open; it is complete once the client
    has sent EOF or closed the channel.
    """

    command: str
    username: str
    env: dict[str, str]
    stdin: bytearray = field(default_factory=bytearray)
    rule: Rule | None = None


def _to_bytes(data: str | bytes) -> bytes:
    return data.encode() if isinstance(data, str) else data


class _Relay:
    """TCP relay from the public port to asyncssh's port; can go silent.

    While silent, each pump finishes at most the read it was waiting on and
    then neither forwards nor reads, so TCP flow control stalls the peer:
    the connection stays established but nothing moves either way.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, LOOPBACK, 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _accept(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(
                LOOPBACK, self.upstream_port
            )
        except OSError:
            client_writer.close()
            return
        self._writers.update((client_writer, up_writer))
        pumps = [
            asyncio.create_task(self._pump(client_reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, client_writer)),
        ]
        self._tasks.update(pumps)
        try:
            # Either side closing ends the pair: SSH does not half-close.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # This is asyncio's connection callback: a cancelled task here is
            # reported as an error, and there is nobody above to cancel.
            pass
        finally:
            for task in pumps:
                task.cancel()
                self._tasks.discard(task)
            for writer in (client_writer, up_writer):
                self._writers.discard(writer)
                writer.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            await self.flowing.wait()
            try:
                data = await reader.read(65536)
            except OSError:
                return
            if not data:
                return
            await self.flowing.wait()
            writer.write(data)
            try:
                await writer.drain()
            except OSError:
                return

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()


class ScriptedSSHServer:
    """An SSH server on 127.0.0.1 that answers exec requests from rules.

    Rules: :meth:`add_rule` appends a rule; a command is answered by the
    **first** rule in insertion order whose regex is found in the command
    string (``re.search``) and that is not used up.  Put specific rules before
    general ones; :meth:`clear_rules` starts over.  A command no rule matches
    gets exit status 127 and stderr ``scripted: no rule for command``.

    Authentication is by public key only: a key is accepted if its OpenSSH
    public line is in :attr:`authorized_keys` (any user name).  Set
    :attr:`refuse_auth` to refuse every attempt.  The lists may be changed
    while the server runs; they are read at each attempt.

    Shell and subsystem (e.g. SFTP) requests are refused with exit status 1.

    Every exec request is recorded (:attr:`commands`, :attr:`execs`) before
    it is answered, including those that hang or disconnect.
    """

    host: str = LOOPBACK

    def __init__(self, authorized_keys: list[str] | None = None) -> None:
        self.authorized_keys: list[str] = list(authorized_keys or [])
        self.refuse_auth = False
        #: Accept logins but never open a channel for a command.
        self.stall_sessions = False
        self.host_key: asyncssh.SSHKey = asyncssh.generate_private_key("ssh-ed25519")
        self.port: int = 0
        self._rules: list[Rule] = []
        self._execs: list[ExecRecord] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._relay: _Relay | None = None
        self._connections: set[asyncssh.SSHServerConnection] = set()
        #: SSH connections accepted so far (authenticated or not).
        self.connections_accepted = 0
        self._silent = False

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
        """Start the event loop thread, the SSH server and the relay."""
        if self._thread is not None:
            return
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name="scripted-ssh", daemon=True
        )
        self._thread.start()
        try:
            self.port = self._call(self._start())
        except BaseException:
            self.stop()
            raise

    async def _start(self) -> int:
        self._acceptor = await asyncssh.create_server(
            lambda: _ServerCallbacks(self),
            LOOPBACK,
            0,
            server_host_keys=[self.host_key],
            encoding=None,
            allow_pty=True,
        )
        self._relay = _Relay(self._acceptor.get_port())
        return await self._relay.start()

    def stop(self) -> None:
        """Close every connection, stop the server and its thread (idempotent)."""
        if self._loop is None or self._thread is None:
            return
        if self._loop.is_running():
            with contextlib.suppress(Exception):
                self._call(self._stop(), timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop = None
        self._thread = None

    async def _stop(self) -> None:
        if self._relay is not None:
            self._relay.flowing.set()
            await self._relay.close()
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
        for conn in list(self._connections):
            conn.abort()
        # Handlers waiting on now-closed channels finish by themselves; give
        # them a moment, then cancel whatever is left before the loop stops.
        others = asyncio.all_tasks() - {asyncio.current_task()}
        if others:
            _, pending = await asyncio.wait(others, timeout=1)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _call(self, coro: Coroutine[Any, Any, _T], timeout: float = 30) -> _T:
        """Run ``coro`` on the server's loop and wait for its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- host key --------------------------------------------------------------

    @property
    def host_key_line(self) -> str:
        """The host public key as an OpenSSH line (``ssh-ed25519 AAAA...``)."""
        return self.host_key.export_public_key("openssh").decode().strip()

    def known_hosts_line(self) -> str:
        """A known_hosts line for this server (``[127.0.0.1]:PORT ssh-ed25519 ...``)."""
        return f"[{self.host}]:{self.port} {self.host_key_line}"

    def replace_host_key(self) -> None:
        """Switch to a new ed25519 host key for connections accepted from now on."""
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        if self._loop is not None and self._acceptor is not None:
            acceptor, keys = self._acceptor, [self.host_key]

            async def update() -> None:
                acceptor.update(server_host_keys=keys)

            self._call(update())

    # -- rules -----------------------------------------------------------------

    def add_rule(
        self,
        pattern: str,
        *,
        stdout: str | bytes = "",
        stderr: str | bytes = "",
        exit_status: int = 0,
        hang: bool = False,
        disconnect: bool = False,
        delay: float = 0.0,
        wait_stdin: bool = False,
        times: int | None = None,
    ) -> Rule:
        """Append a rule (first match in insertion order wins).

        - ``stdout``/``stderr``/``exit_status``: the answer.
        - ``delay``: seconds to wait before answering.
        - ``hang``: write stdout/stderr, then never exit nor close the
          channel; it stays open until the client closes it or the server
          stops.
        - ``disconnect``: write stdout/stderr, then drop the whole TCP
          connection without an exit status or SSH disconnect message.
        - ``wait_stdin``: wait for EOF on stdin before answering (for
          commands that read a script from stdin).
        - ``times``: apply at most this many times.
        """
        rule = Rule(
            pattern=re.compile(pattern),
            stdout=_to_bytes(stdout),
            stderr=_to_bytes(stderr),
            exit_status=exit_status,
            hang=hang,
            disconnect=disconnect,
            delay=delay,
            wait_stdin=wait_stdin,
            times=times,
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear_rules(self) -> None:
        with self._lock:
            self._rules.clear()

    def _match(self, command: str) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.times is not None and rule.used >= rule.times:
                    continue
                if rule.pattern.search(command):
                    rule.used += 1
                    return rule
        return None

    # -- records ---------------------------------------------------------------

    @property
    def commands(self) -> list[str]:
        """A snapshot of the command strings received so far, in order."""
        with self._lock:
            return [record.command for record in self._execs]

    @property
    def execs(self) -> list[ExecRecord]:
        """A snapshot of the exec records (command, user, env, stdin)."""
        with self._lock:
            return list(self._execs)

    def clear_commands(self) -> None:
        with self._lock:
            self._execs.clear()

    def wait_for_command(self, pattern: str, timeout: float = 10.0) -> ExecRecord:
        """Block until a recorded command matches ``pattern``; return its record."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for record in self._execs:
                    if regex.search(record.command):
                        return record
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no command matching {pattern!r} arrived")
                self._changed.wait(remaining)

    # -- connections -------------------------------------------------------------

    @property
    def open_connections(self) -> int:
        """How many SSH connections are open on the server side now."""
        return len(self._connections)

    def drop_connections(self) -> None:
        """Drop every open connection at once, as a restarted server would.

        The TCP connections close without an SSH disconnect message; the
        server keeps accepting new ones.
        """
        if self._loop is None:
            return
        connections = self._connections

        async def drop() -> None:
            for conn in list(connections):
                conn.abort()
            await asyncio.sleep(0)

        self._call(drop())

    # -- silence ---------------------------------------------------------------

    def silent(self, enabled: bool = True) -> None:
        """Stop (or resume) all traffic while keeping TCP connections open.

        When enabled, the relay in front of the SSH server stops reading and
        forwarding in both directions on every connection, including ones
        accepted later (they get no SSH banner).  Bytes already in flight may
        still be delivered; after that the client sees a server that accepts
        TCP but never answers: no output, no exit status, no keepalive
        replies.  Commands sent meanwhile are not recorded until traffic
        resumes (they are stuck in the relay or in TCP buffers).
        """
        self._silent = enabled
        if self._loop is not None and self._relay is not None:
            flowing = self._relay.flowing

            async def switch() -> None:
                if enabled:
                    flowing.clear()
                else:
                    flowing.set()

            # Wait for the switch so traffic sent after this call is affected.
            self._call(switch())

    @property
    def is_silent(self) -> bool:
        return self._silent

    # -- request handling --------------------------------------------------------

    def _is_authorized(self, key: asyncssh.SSHKey) -> bool:
        if self.refuse_auth:
            return False
        wanted = key.public_data
        for line in list(self.authorized_keys):
            try:
                if asyncssh.import_public_key(line).public_data == wanted:
                    return True
            except (asyncssh.KeyImportError, ValueError):
                continue
        return False

    async def _handle(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        if process.command is None:
            kind = "subsystems" if process.subsystem else "shells"
            process.stderr.write(f"scripted: {kind} are not supported\n".encode())
            process.exit(1)
            return
        # The channel of a server process always belongs to a server connection.
        conn = cast(asyncssh.SSHServerConnection, process.channel.get_connection())
        record = ExecRecord(
            command=process.command,
            username=str(conn.get_extra_info("username")),
            env=dict(process.env),
        )
        stdin_done = asyncio.create_task(self._collect_stdin(process, record))
        rule = self._match(record.command)
        record.rule = rule
        with self._changed:
            self._execs.append(record)
            self._changed.notify_all()
        try:
            await self._answer(process, conn, rule, stdin_done)
        finally:
            stdin_done.cancel()

    async def _collect_stdin(
        self, process: asyncssh.SSHServerProcess[bytes], record: ExecRecord
    ) -> None:
        with contextlib.suppress(asyncssh.Error, OSError, asyncio.IncompleteReadError):
            while chunk := await process.stdin.read(65536):
                record.stdin.extend(chunk)

    async def _answer(
        self,
        process: asyncssh.SSHServerProcess[bytes],
        conn: asyncssh.SSHServerConnection,
        rule: Rule | None,
        stdin_done: asyncio.Task[None],
    ) -> None:
        if rule is None:
            process.stderr.write(NO_RULE_STDERR.encode() + b"\n")
            process.exit(NO_RULE_EXIT_STATUS)
            return
        if rule.wait_stdin:
            await asyncio.shield(stdin_done)
        if rule.delay:
            await asyncio.sleep(rule.delay)
        if process.is_closing():
            return  # client gave up during the delay
        if rule.stdout:
            process.stdout.write(rule.stdout)
        if rule.stderr:
            process.stderr.write(rule.stderr)
        if rule.hang:
            await process.channel.wait_closed()
            return
        if rule.disconnect:
            # Give the written data a moment to reach the socket; abort()
            # then closes it without sending exit-status or SSH_MSG_DISCONNECT.
            await asyncio.sleep(0.05)
            conn.abort()
            return
        process.exit(rule.exit_status)


class _ServerCallbacks(asyncssh.SSHServer):
    """Per-connection callbacks: public key auth against the owner's list."""

    def __init__(self, owner: ScriptedSSHServer) -> None:
        self._owner = owner
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._owner._connections.add(conn)
        self._owner.connections_accepted += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._owner._connections.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True  # authentication is always required

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return self._owner._is_authorized(key)

    def session_requested(self) -> Any:
        """Open a session for `_handle`, or never answer when sessions stall.

        This is what `process_factory` would do, made explicit so that
        `stall_sessions` can leave the client waiting for its channel.
        """
        if self._owner.stall_sessions:
            return asyncio.Event().wait()  # never set: the channel never opens
        return asyncssh.SSHServerProcess(self._owner._handle, None, 0, False)
