"""`brokeforge serve`: the web app and N workers as child processes.

The parent only supervises: it applies migrations, starts the children,
restarts a worker that exits, and on SIGTERM or Ctrl-C asks every child to
stop, waits a bounded time, then kills what is left.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import time
from types import FrameType

logger = logging.getLogger("brokeforge.supervisor")

POLL_SECONDS = 0.2
STOP_GRACE_SECONDS = 20.0
WORKER_POLL_INTERVAL = 0.5


def _setup() -> None:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        signum = -returncode
        name = signal.Signals(signum).name
        return f"killed by signal {signum} ({name})"
    return f"exit status {returncode}"


class Supervisor:
    def __init__(self, host: str, port: int, workers: int) -> None:
        self.host, self.port, self.worker_count = host, port, workers
        self.web: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes] | None] = [None] * workers
        self.stopping = False

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "brokeforge", *args])

    def start_web(self) -> None:
        self.web = self._spawn("web", "--host", self.host, "--port", str(self.port))

    def start_worker(self, slot: int) -> None:
        self.workers[slot] = self._spawn("worker")

    def step(self) -> None:
        """Restart every child that has exited; one pass of the loop."""
        if self.web is not None and self.web.poll() is not None:
            logger.error(
                "web process exited (%s); restarting it",
                describe_exit(self.web.returncode),
                extra={"action": "web_exited"},
            )
            self.start_web()
        for slot, child in enumerate(self.workers):
            if child is not None and child.poll() is not None:
                # TODO(issue 3): fail the operation this worker held right here,
                # naming the exit; until then the reaper of issue 3 must do it.
                logger.error(
                    "worker process %s exited (%s); starting a new one",
                    child.pid,
                    describe_exit(child.returncode),
                    extra={"action": "worker_exited", "pid": child.pid},
                )
                self.start_worker(slot)

    def stop(self) -> None:
        children = [c for c in [self.web, *self.workers] if c is not None]
        for child in children:
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in children:
            try:
                child.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def run(self) -> int:
        def request_stop(signum: int, frame: FrameType | None) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        self.start_web()
        for slot in range(self.worker_count):
            self.start_worker(slot)
        print(
            f"BrokeForge is running on http://{self.host}:{self.port}/ "
            f"with {self.worker_count} worker(s); Ctrl-C stops it",
            flush=True,
        )
        while not self.stopping:
            self.step()
            time.sleep(POLL_SECONDS)
        print("stopping BrokeForge", flush=True)
        self.stop()
        return 0


def serve(args: argparse.Namespace) -> int:
    _setup()
    return Supervisor(args.host, args.port, args.workers).run()


def web(args: argparse.Namespace) -> int:
    import uvicorn

    uvicorn.run(
        "brokeforge.asgi:application",
        host=args.host,
        port=args.port,
        lifespan="off",
        log_level="info",
    )
    return 0


def worker(args: argparse.Namespace) -> int:
    import django

    django.setup()
    from django_tasks_db.management.commands.db_worker import Worker

    from brokeforge.lifecycle.runner import worker_id

    logging.getLogger("django_tasks_db").setLevel(logging.INFO)
    this_worker = worker_id()
    logger.info("worker %s started", this_worker, extra={"action": "worker_started"})
    runner = Worker(
        queue_names=["default"],
        interval=WORKER_POLL_INTERVAL,
        batch=False,
        backend_name="default",
        startup_delay=False,
        max_tasks=None,
        worker_id=this_worker[:64],
        excluded_queue_names=[],
    )
    runner.configure_signals()
    runner.run()
    return 0
