"""What benchmarks 1 and 2 run on, each part started by the benchmark and
stopped at its end: the loopback SSH host, a private redis-server, and each
system's processes (BrokeForge's `serve`/`web`/`worker`, a Celery worker, an
RQ worker).

Everything listens on 127.0.0.1 only. The SSH host is the test suite's
Debian host (tests/testhosts: a Debian chroot whose sshd listens on a free
loopback port), so the job's remote command runs in the chroot.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.remote import START_LOG

REPO = Path(__file__).resolve().parents[1]
#: How often every system's state is read while waiting for its report.
POLL = 0.02


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    check: Callable[[], Any], timeout: float, what: str, interval: float = POLL
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def kill_group(process: subprocess.Popen[bytes], signum: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)


def stop_group(process: subprocess.Popen[bytes], grace: float = 10) -> None:
    """SIGTERM the process's group, then SIGKILL what is left after `grace`."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    # Children of a group leader that already exited may still run.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


class Processes:
    """Subprocesses in sessions of their own, each logging to a file."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.started: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = self.workdir / f"{len(self.logs):02d}-{name}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv,
                env=self.env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append(process)
        return process

    def tail(self, lines: int = 30) -> str:
        text = []
        for log in self.logs[-3:]:
            if log.exists():
                body = log.read_text(errors="replace").splitlines()[-lines:]
                text.append(f"--- {log.name}\n" + "\n".join(body))
        return "\n".join(text)

    def stop_all(self) -> None:
        for process in reversed(self.started):
            stop_group(process)
        self.started.clear()


class Redis:
    """A redis-server of Debian's on a free loopback port, in a temp dir."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> Redis:
        import redis

        self.port = free_port()
        with (self.workdir / "redis.log").open("wb") as out:
            self.process = subprocess.Popen(
                [
                    "redis-server",
                    "--bind", "127.0.0.1",
                    "--port", str(self.port),
                    "--dir", str(self.workdir),
                    "--save", "",
                    "--appendonly", "no",
                    "--protected-mode", "yes",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        client = redis.Redis.from_url(self.url)

        def up() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    "redis-server exited: "
                    + (self.workdir / "redis.log").read_text(errors="replace")
                )
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(up, 15, "redis-server to answer", interval=0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            stop_group(self.process)


class Host:
    """The loopback Debian host, and OpenSSH client files to reach it."""

    def __init__(self, workdir: Path) -> None:
        import asyncssh

        from tests.testhosts.fixtures import DebianTestHost

        self.workdir = workdir
        self.key = asyncssh.generate_private_key("ssh-ed25519")
        self.debian = DebianTestHost(workdir / "host", self.key)

    def __enter__(self) -> Host:
        self.debian.start()
        key_file = self.workdir / "client_key"
        key_file.write_bytes(self.key.export_private_key("openssh"))
        key_file.chmod(0o600)
        known = self.workdir / "known_hosts"
        known.write_text(self.debian.known_hosts_text())
        self.ssh_argv = [
            "ssh",
            "-F", "/dev/null",
            "-i", str(key_file),
            "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={known}",
            "-o", "StrictHostKeyChecking=yes",
            "-p", str(self.debian.port),
            f"root@{self.debian.host}",
        ]  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        self.debian.close()

    @property
    def private_key(self) -> str:
        return str(self.key.export_private_key().decode())

    def starts(self, tag: str) -> list[float]:
        """When the job tagged `tag` started on the host, one per run."""
        path = self.debian.root / START_LOG.lstrip("/")
        if not path.exists():
            return []
        found = []
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] == tag:
                found.append(float(parts[2]))
        return found

    def wait_start(self, tag: str, timeout: float) -> float:
        return float(
            wait_for(lambda: self.starts(tag)[:1], timeout, f"{tag} to start")[0]
        )

    def job_pids(self) -> list[int]:
        """The job's remote commands (its sleep or cat) still running on the host."""
        found = []
        for pid in self.debian.pids(include_listener=False):
            try:
                argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if argv0 in (b"sleep", b"cat", b"/usr/bin/sleep", b"/usr/bin/cat"):
                found.append(pid)
        return found

    def kill_jobs(self) -> None:
        for pid in self.job_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        # The Debian host unmounts its own tree on close; what is left is ours.
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


def child_pids(pid: int) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=False)]
    except psutil.NoSuchProcess:
        return []


def python() -> str:
    return sys.executable


def ssh_env(host: Host, redis_url: str) -> dict[str, str]:
    return {"BENCH_SSH": json.dumps(host.ssh_argv), "BENCH_REDIS_URL": redis_url}


def postgres_bindir() -> Path | None:
    """Debian's newest PostgreSQL server binaries, if installed (and the
    `postgres` user that runs them)."""
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return None
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: (
            int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0
        ),
    )
    return found[-1].parent if found else None


class Postgres:
    """A throwaway PostgreSQL cluster listening only on a Unix socket in a
    temp dir (no TCP port), owned by `postgres`, trusting local connections;
    as scripts/with-postgres makes for the tests. Never the machine's own
    cluster."""

    def __init__(self, workdir: Path) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError("no PostgreSQL server installed (package postgresql)")
        self.bindir = bindir
        # Its own temp dir: the benchmark's is private to root, and the
        # cluster runs as `postgres`.
        self.dir = Path(tempfile.mkdtemp(prefix="bench-pg-"))

    @property
    def url(self) -> str:
        return f"postgres://postgres@/brokeforge?host={self.dir}"

    def _as_postgres(self, *argv: str) -> None:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv],
            capture_output=True,
            text=True,
            cwd="/",
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stdout}{done.stderr}")

    def __enter__(self) -> Postgres:
        try:
            subprocess.run(["chown", "postgres:", str(self.dir)], check=True)
            data = str(self.dir / "data")
            self._as_postgres(
                str(self.bindir / "initdb"), "-D", data, "-A", "trust",
                "-U", "postgres", "--no-sync",
            )  # fmt: skip
            options = (
                f"-c listen_addresses='' -k {self.dir} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200"
            )
            self._as_postgres(
                str(self.bindir / "pg_ctl"), "-D", data, "-l", str(self.dir / "log"),
                "-w", "-o", options, "start",
            )  # fmt: skip
            self._as_postgres(
                str(self.bindir / "createdb"), "-h", str(self.dir), "brokeforge"
            )
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(RuntimeError):
            self._as_postgres(
                str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"),
                "-m", "immediate", "stop",
            )  # fmt: skip
        subprocess.run(["rm", "-rf", str(self.dir)], check=False)


def run_in_child(module: str, database: str, quick: bool) -> Any:
    """Run `python -m bench.MODULE --brokeforge DATABASE [--quick]` and
    return the JSON it prints last: BrokeForge's side of a benchmark, on its
    own Django settings and database, in a process of its own."""
    command = [python(), "-m", f"bench.{module}", "--brokeforge", database]
    if quick:
        command.append("--quick")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=err)
        try:
            child.wait()
        except BaseException:
            # Stopped: let it unwind (unmount the host, stop its processes).
            child.terminate()
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
            raise
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if child.returncode != 0:
        raise RuntimeError(
            f"BrokeForge on {database} failed (exit {child.returncode}):\n"
            + stderr[-4000:]
        )
    return json.loads(stdout.strip().splitlines()[-1])


def unwind_on_sigterm() -> None:
    """SIGTERM raises SystemExit, so context managers stop what they started."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
