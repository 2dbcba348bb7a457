"""A forwarding HTTP proxy that reaches one Debian mirror and nothing else.

A test host in its own network namespace has no route out: apt inside it
talks to this proxy on the machine's end of the veth pair
(``Acquire::http::Proxy``), and the proxy forwards plain ``GET``/``HEAD``
requests to the configured mirror (host and port) only.  Any other target,
method or ``CONNECT`` is answered ``403``/``405`` without opening a
connection, so nothing inside the namespace can use it to reach another
address.  The machine's own firewall is never touched.

It runs in threads of the test process, so it dies with it.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

#: Longest request head (request line plus headers) accepted.
MAX_HEAD = 64 * 1024
UPSTREAM_TIMEOUT = 60.0
#: Request headers that belong to one hop and are not forwarded.
_HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "proxy-authorization"}


class MirrorProxy:
    """Forward ``http://MIRROR_HOST:MIRROR_PORT/...`` requests; refuse the rest.

    Usage::

        with MirrorProxy("10.231.0.1", "http://deb.debian.org/debian") as proxy:
            ...  # apt with Acquire::http::Proxy "http://10.231.0.1:PORT/"
    """

    def __init__(self, listen_address: str, mirror_url: str) -> None:
        parts = urlsplit(mirror_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the mirror must be an http:// URL: {mirror_url!r}")
        self.listen_address = listen_address
        self.mirror_host = parts.hostname.lower()
        self.mirror_port = parts.port or 80
        self.port = 0
        #: The mirror's address, resolved once: the machine's name server
        #: fails now and then under load, and the mirror does not move.
        self._address: str | None = None
        #: Request targets answered, for tests: (method, url, status).
        self.log: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.listen_address}:{self.port}/"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._handle(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server((self.listen_address, 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"mirror-proxy-{self.listen_address}",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # -- one client connection: one request -----------------------------------

    def _mirror_address(self) -> str:
        with self._lock:
            if self._address is None:
                self._address = _resolve(self.mirror_host, self.mirror_port)
            return self._address

    def _record(self, method: str, target: str, status: int) -> None:
        with self._lock:
            self.log.append((method, target, status))

    def _handle(self, client: socket.socket) -> None:
        client.settimeout(UPSTREAM_TIMEOUT)
        head = _read_head(client)
        if head is None:
            return
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, _version = request_line.split(" ")
        except ValueError:
            _answer(client, 400, "malformed request line")
            return
        if method not in ("GET", "HEAD"):
            self._record(method, target, 405)
            _answer(client, 405, f"{method} is not forwarded")
            return
        parts = urlsplit(target)
        try:
            port = parts.port or 80
        except ValueError:
            port = -1
        if (
            parts.scheme != "http"
            or (parts.hostname or "").lower() != self.mirror_host
            or port != self.mirror_port
        ):
            self._record(method, target, 403)
            _answer(
                client,
                403,
                "this proxy forwards only to "
                f"http://{self.mirror_host}:{self.mirror_port}/",
            )
            return
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        headers = [
            line
            for line in header_lines
            if line and line.split(":", 1)[0].strip().lower() not in _HOP_HEADERS
        ]
        upstream_head = "\r\n".join(
            [f"{method} {path} HTTP/1.1", *headers, "Connection: close", "", ""]
        )
        try:
            upstream = socket.create_connection(
                (self._mirror_address(), self.mirror_port), timeout=UPSTREAM_TIMEOUT
            )
        except OSError as error:
            self._record(method, target, 502)
            _answer(client, 502, f"mirror unreachable: {error}")
            return
        self._record(method, target, 200)
        with upstream:
            upstream.sendall(upstream_head.encode("latin-1"))
            _relay(upstream, client)


def _resolve(name: str, port: int, attempts: int = 5) -> str:
    for attempt in range(attempts):
        try:
            return str(socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)[0][4][0])
        except OSError:
            if attempt == attempts - 1:
                raise
            time.sleep(1 + attempt)
    raise OSError(f"cannot resolve {name}")


def _read_head(client: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = client.recv(4096)
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
        if len(data) > MAX_HEAD:
            _answer(client, 431, "request head too large")
            return None
    # A GET carries no body; anything after the head is ignored.
    return data.split(b"\r\n\r\n", 1)[0]


def _relay(source: socket.socket, sink: socket.socket) -> None:
    """Copy ``source`` to ``sink`` until ``source`` ends or either side fails."""
    with contextlib.suppress(OSError):
        while chunk := source.recv(65536):
            sink.sendall(chunk)


def _answer(client: socket.socket, status: int, message: str) -> None:
    reasons = {400: "Bad Request", 403: "Forbidden", 405: "Method Not Allowed"}
    reasons |= {431: "Request Header Fields Too Large", 502: "Bad Gateway"}
    body = (message + "\n").encode()
    head = (
        f"HTTP/1.1 {status} {reasons.get(status, 'Error')}\r\n"
        "Content-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    with contextlib.suppress(OSError):
        client.sendall(head.encode() + body)
