"""Run a real BrokeForge next to the test, hurt it, and check what it left.

`Fleet` starts `brokeforge serve` (the supervisor, the web process and its
workers) or bare `brokeforge worker` processes as subprocesses on the test's
own database, so the test can kill them and read the outcome. `check_after`
asserts the invariants every fault run must leave behind, and `record`
keeps each run's figures for the benchmark (scripts/bench-reliability).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.db import connection
from django.utils import timezone

from brokeforge.lifecycle.models import (
    TERMINAL_STATES,
    TRANSITIONAL_STATUSES,
    Event,
    Operation,
    Worker,
)
from brokeforge.packages.models import Database
from tests.testhosts.debian_host import pids_rooted_at

REPO = Path(__file__).resolve().parents[2]
#: How often each scenario repeats: a few in CI, 20+ in the benchmark.
REPEAT = int(os.environ.get("BROKEFORGE_FAULT_REPEAT", "2"))
#: Remote commands the engine starts (anything else in the chroot is sshd).
REMOTE_MARKERS = ("sleep ", "bash -c", "timeout ", "apt-get", "dpkg", "cat")


def database_url() -> str:
    """The test database, as a URL the subprocesses can use."""
    sd = connection.settings_dict
    if sd["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{sd['NAME']}"
    user = quote(sd.get("USER") or "")
    password = f":{quote(sd['PASSWORD'])}" if sd.get("PASSWORD") else ""
    host = sd.get("HOST") or sd.get("OPTIONS", {}).get("host") or ""
    port = f":{sd['PORT']}" if sd.get("PORT") and not host.startswith("/") else ""
    if host.startswith("/"):
        return f"postgres://{user}{password}@/{sd['NAME']}?host={quote(host)}"
    return f"postgres://{user}{password}@{host}{port}/{sd['NAME']}"


def database_kind() -> str:
    return "sqlite" if connection.vendor == "sqlite" else "postgresql"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def wait_terminal(operation: Operation, timeout: float = 60) -> Operation:
    def ended() -> bool:
        operation.refresh_from_db()
        return operation.state in TERMINAL_STATES

    wait_for(ended, timeout, f"operation {operation.pk} to end")
    return operation


def wait_running(operation: Operation, timeout: float = 30) -> Operation:
    def running() -> bool:
        operation.refresh_from_db()
        assert operation.state not in TERMINAL_STATES, operation.error_message
        return operation.state == "running" and "running" in operation.output

    wait_for(running, timeout, f"operation {operation.pk} to run its script")
    return operation


class Fleet:
    """BrokeForge processes on the test database."""

    def __init__(self, tmp_path: Path, **settings: str) -> None:
        self.tmp_path = tmp_path
        self.env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("BROKEFORGE_DATABASE_URL",)
        }
        self.env.update(
            DJANGO_SETTINGS_MODULE="tests.settings",
            BROKEFORGE_DATABASE_URL=database_url(),
            BROKEFORGE_LOG_LEVEL="INFO",
            BROKEFORGE_SHUTDOWN_GRACE="2",
            BROKEFORGE_APT_LOCK_TIMEOUT="5",
            BROKEFORGE_CONNECT_TIMEOUT="5",
        )
        self.env.update(settings)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def _start(self, *args: str) -> subprocess.Popen[bytes]:
        log = self.tmp_path / f"fleet-{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "brokeforge", *args],
                env=self.env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def serve(self, workers: int = 1, *args: str) -> subprocess.Popen[bytes]:
        process = self._start(
            "serve", "--port", str(free_port()), "--workers", str(workers), *args
        )
        self.wait_for_workers(workers)
        return process

    def worker(self, *args: str) -> subprocess.Popen[bytes]:
        known = set(Worker.objects.values_list("id", flat=True))
        process = self._start("worker", *args)
        wait_for(
            lambda: Worker.objects.exclude(id__in=known).exists(),
            60,
            f"the worker to register\n{self.log_text()}",
        )
        return process

    def live_worker_count(self) -> int:
        return Worker.objects.filter(stopped_at__isnull=True).count()

    def wait_for_workers(self, count: int, timeout: float = 60) -> None:
        wait_for(
            lambda: self.live_worker_count() >= count,
            timeout,
            f"{count} worker(s) to register\n{self.log_text()}",
        )

    def worker_pid(self, worker_id: str) -> int:
        return Worker.objects.get(id=worker_id).pid

    def log_text(self) -> str:
        return "\n".join(
            log.read_text(errors="replace")[-3000:] for log in self.logs if log.exists()
        )

    def kill_all(self) -> None:
        """SIGKILL every BrokeForge process at once: workers, then parents."""
        for worker in Worker.objects.filter(stopped_at__isnull=True):
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self.processes.clear()

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()


def remote_leftovers(root: Path) -> list[str]:
    """Commands the engine started that still run on the test host."""
    found = []
    for pid in pids_rooted_at(root):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        command = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
        if command.startswith(REMOTE_MARKERS) or "probe" in command:
            found.append(f"{pid}: {command[:120]}")
    return found


def wait_no_leftovers(root: Path, timeout: float = 10) -> list[str]:
    """Leftover remote commands still there after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = remote_leftovers(root)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def check_after(
    operations: Iterable[Operation], reason_classes: Iterable[str] | None = None
) -> None:
    """The invariants every fault run must leave behind."""
    stuck = list(Database.objects.filter(status__in=TRANSITIONAL_STATUSES))
    assert not stuck, f"records left in a transitional status: {stuck}"
    expected = list(reason_classes) if reason_classes is not None else None
    for index, operation in enumerate(operations):
        operation.refresh_from_db()
        assert operation.state in TERMINAL_STATES, operation
        terminal_events = Event.objects.filter(
            operation=operation, status__in=["active", "failed", "removed"]
        ).count()
        assert terminal_events <= 1, f"{operation}: {terminal_events} terminal events"
        if expected is not None:
            assert operation.reason_class == expected[index], (
                f"{operation}: {operation.reason_class} ({operation.error_message})"
            )
        if operation.state != "succeeded":
            assert operation.error_message, f"{operation} ended without a reason"


def seconds_since(moment: float, operation: Operation) -> float:
    """From a `time.time()` moment to the operation's end, in seconds."""
    assert operation.finished_at is not None
    return operation.finished_at.timestamp() - moment


def record(scenario: str, **figures: Any) -> None:
    """Keep one run's figures for the benchmark, when it asks for them."""
    target = os.environ.get("BROKEFORGE_FAULT_REPORT")
    if not target:
        return
    entry = {"scenario": scenario, "database": database_kind(), **figures}
    with open(target, "a") as out:
        out.write(json.dumps(entry) + "\n")


def now() -> float:
    return timezone.now().timestamp()
