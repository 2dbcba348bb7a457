"""A real BrokeForge for a benchmark: its own data directory and database,
`brokeforge serve` as a subprocess, an account and an API token.

The benchmark talks to it only as a user would: the `brokeforge` command
for what is local-only (the account, the token) and the JSON API with the
token for everything else. No Django runs in the benchmark's own process,
so several installations (SQLite, PostgreSQL) can be measured in one run.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

REPO = Path(__file__).resolve().parents[1]
ACCOUNT = "bench"
#: Seconds a kept-alive API connection may idle before a fresh one is used.
IDLE_REUSE = 2.0
PASSWORD = "bench passphrase that is long enough 7"  # noqa: S105 (throwaway)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status, self.body = status, body


class Installation:
    """BrokeForge on `database_url` (a fresh SQLite file when None)."""

    def __init__(self, workdir: Path, database_url: str | None = None) -> None:
        self.workdir = workdir
        home = workdir / "home"
        home.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "BROKEFORGE_HOME": str(home),
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "BROKEFORGE_LOG_LEVEL": "INFO",
            "BROKEFORGE_CONNECT_TIMEOUT": "20",
            # The bench process is not a Python path entry of the children.
            "PYTHONPATH": os.pathsep.join(
                [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        }
        self.env["BROKEFORGE_DATABASE_URL"] = (
            database_url or f"sqlite:///{home / 'brokeforge.sqlite3'}"
        )
        self.port = free_port()
        self.token = ""
        self.log = workdir / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None
        #: Other BrokeForge processes started for the benchmark (`start`).
        self.others: list[subprocess.Popen[str]] = []
        self._local = threading.local()
        self._connections: list[http.client.HTTPConnection] = []

    # -- the local command ---------------------------------------------------------

    def cli(self, *args: str, stdin: str = "") -> str:
        result = subprocess.run(
            [sys.executable, "-m", "brokeforge", *args],
            input=stdin.encode(),
            env=self.env,
            cwd=REPO,
            capture_output=True,
            check=False,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"brokeforge {' '.join(args)} exited {result.returncode}: "
                + result.stderr.decode(errors="replace")[-2000:]
            )
        return result.stdout.decode()

    def start(self, module: str, *args: str) -> subprocess.Popen[str]:
        """Start `python -m module args` on this installation, piped both ways;
        its memory counts with BrokeForge's (see `pids`)."""
        with (self.workdir / f"{module}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                env=self.env,
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        self.others.append(process)
        return process

    def create_account(self) -> None:
        self.cli("createuser", ACCOUNT, "--password-stdin", stdin=PASSWORD + "\n")
        answer = json.loads(self.cli("token", "create", "--name", "bench", "--json"))
        self.token = answer["token"]

    # -- serve -----------------------------------------------------------------------

    def serve(
        self,
        workers: int,
        concurrency: int | None = None,
        web_processes: int | None = None,
    ) -> None:
        """Start `brokeforge serve` and wait for the API and every worker."""
        args = ["serve", "--port", str(self.port), "--workers", str(workers)]
        if concurrency is not None:
            args += ["--concurrency", str(concurrency)]
        if web_processes is not None:
            args += ["--web-processes", str(web_processes)]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "brokeforge", *args],
                env=self.env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 90
        while not self._ready(workers):
            if self.process.poll() is not None:
                raise RuntimeError(f"brokeforge serve exited:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"brokeforge serve did not start:\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def _ready(self, workers: int) -> bool:
        started = self.log.read_text(errors="replace").count(" started")
        if started < workers:
            return False
        with contextlib.suppress(OSError, ApiError):
            self.api("GET", "/kinds")
            return True
        return False

    def log_tail(self, chars: int = 4000) -> str:
        return (
            self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""
        )

    def pids(self) -> list[int]:
        """`serve`, every process under it, and those `start` started."""
        roots = [p for p in [self.process, *self.others] if p and p.poll() is None]
        return [pid for root in roots for pid in descendants(root.pid)]

    def stop(self) -> None:
        for other in self.others:
            if other.poll() is None:
                other.kill()
            other.wait()
            for stream in (other.stdin, other.stdout):
                if stream is not None:
                    stream.close()
        self.others.clear()
        for conn in self._connections:
            conn.close()
        self._connections.clear()
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the API ---------------------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """One API call with the token (a keep-alive connection per thread)."""
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None and time.monotonic() - self._local.used > IDLE_REUSE:
            # uvicorn closes a connection idle for 5 s: a request sent on it
            # then meets a closed socket. Start afresh instead.
            conn.close()
            conn = None
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            self._local.conn = conn
            self._connections.append(conn)
        headers = {"Authorization": f"Bearer {self.token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, f"/api/v1{path}", body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            self._local.used = time.monotonic()
        except (OSError, http.client.HTTPException):
            conn.close()
            self._local.conn = None
            raise
        answer = json.loads(raw) if raw else None
        if response.status >= 400:
            raise ApiError(response.status, answer)
        return answer

    def add_servers(
        self, hosts: list[Any], private_key: str, *, threads: int = 4
    ) -> dict[str, int]:
        """Register each bench host and pin its key (the API's check); name -> id."""
        from concurrent.futures import ThreadPoolExecutor

        def add(host: Any) -> tuple[str, int]:
            server = self.api(
                "POST",
                "/servers",
                {
                    "name": host.name,
                    "host": "127.0.0.1",
                    "port": host.port,
                    "user": "root",
                    "private_key": private_key,
                },
            )
            checked = self.api("POST", f"/servers/{server['id']}/check", {})
            if not checked.get("ok"):
                raise RuntimeError(f"{host.name}: {checked.get('error_message')}")
            return host.name, int(server["id"])

        with ThreadPoolExecutor(threads) as pool:
            return dict(pool.map(add, hosts))

    def operations(self, limit: int = 500) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = self.api("GET", f"/operations?limit={limit}")
        return answer


def descendants(root: int) -> list[int]:
    """`root` and every process below it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: split after it.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def cpu_ticks(pid: int) -> int:
    """User + system CPU time of a process, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def role(pid: int) -> str:
    """What a BrokeForge process is, from its command line."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    for word in (b"serve", b"web", b"worker", b"bench.request_local"):
        if word in words:
            return word.decode()
    return "other"


class MemorySampler:
    """The peak of RSS summed over an installation's processes, every 100 ms,
    and the CPU time they use meanwhile."""

    def __init__(self, installation: Installation, interval: float = 0.1) -> None:
        self.installation = installation
        self.interval = interval
        self.peak = 0
        self.peak_processes = 0
        #: CPU ticks per process: when first seen, and last seen.
        self._first: dict[int, int] = {}
        self._last: dict[int, int] = {}
        self._roles: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> list[int]:
        pids = self.installation.pids()
        for pid in pids:
            with contextlib.suppress(OSError, ValueError, IndexError):
                ticks = cpu_ticks(pid)
                if pid not in self._roles:
                    self._roles[pid] = role(pid)
                    # A process born during the run counts from zero.
                    self._first[pid] = 0
                self._last[pid] = ticks
        return pids

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            pids = self._sample()
            total = rss_bytes(pids)
            if total > self.peak:
                self.peak, self.peak_processes = total, len(pids)

    def cpu_seconds(self) -> float:
        """CPU seconds the processes used while sampled."""
        return sum(self.cpu_by_role().values())

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds used while sampled, per kind of process (serve, web...)."""
        per_tick = os.sysconf("SC_CLK_TCK")
        used: dict[str, float] = {}
        for pid, last in self._last.items():
            name = self._roles[pid]
            used[name] = used.get(name, 0.0) + (last - self._first[pid]) / per_tick
        return used

    def __enter__(self) -> Self:
        self._sample()
        # Processes already running count from now.
        self._first = dict(self._last)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as path:
        yield Path(path)
