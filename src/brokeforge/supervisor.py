"""`brokeforge serve`: the web app and N workers as child processes.

The parent only supervises: it applies migrations, starts the children,
restarts a worker that exits, and on SIGTERM or Ctrl-C asks every child to
stop, waits a bounded time, then kills what is left.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import uuid
from types import FrameType

logger = logging.getLogger("brokeforge.supervisor")

POLL_SECONDS = 0.2
STOP_GRACE_SECONDS = 20.0
REAP_EVERY_SECONDS = 5.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In a child: get SIGTERM when the supervisor dies, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _setup() -> None:
    from brokeforge.home import setup_django

    setup_django()


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        signum = -returncode
        name = signal.Signals(signum).name
        return f"killed by signal {signum} ({name})"
    return f"exit status {returncode}"


class Supervisor:
    def __init__(
        self,
        host: str,
        port: int,
        workers: int,
        *,
        with_web: bool = True,
        concurrency: int = 1,
        web_processes: int = 1,
    ) -> None:
        self.host, self.port, self.worker_count = host, port, workers
        self.concurrency = concurrency
        self.with_web = with_web
        #: The web processes, which share one listening socket opened here:
        #: the kernel hands each connection to one of them, and a web
        #: process restarting loses none (they wait in the backlog).
        self.webs: list[subprocess.Popen[bytes] | None] = [None] * web_processes
        self.listener: socket.socket | None = None
        self.workers: list[subprocess.Popen[bytes] | None] = [None] * workers
        self.worker_ids: list[str] = [""] * workers
        self.stopping = False
        self._last_reap = 0.0
        #: `brokeforge metrics collect`, run every BROKEFORGE_METRICS_INTERVAL
        #: seconds by a supervisor that runs the web app.
        self.collector: subprocess.Popen[bytes] | None = None
        self._last_collect = time.monotonic()

    def _spawn(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        quiet: bool = False,
        pass_fds: tuple[int, ...] = (),
    ) -> subprocess.Popen[bytes]:
        # A session of its own: Ctrl-C reaches only this supervisor, which
        # then stops the children in order.
        return subprocess.Popen(
            [sys.executable, "-m", "brokeforge", *args],
            env=env,
            stdout=subprocess.DEVNULL if quiet else None,
            start_new_session=True,
            pass_fds=pass_fds,
            preexec_fn=_die_with_parent,  # the supervisor runs no threads
        )

    def listen(self) -> None:
        """Open the web processes' listening socket (raises OSError)."""
        self.listener = listening_socket(self.host, self.port)

    def start_web(self, slot: int) -> None:
        if self.listener is None:
            self.listen()
        assert self.listener is not None
        fd = self.listener.fileno()
        self.webs[slot] = self._spawn("web", "--fd", str(fd), pass_fds=(fd,))

    def start_worker(self, slot: int) -> None:
        # Every start gets a fresh id: a new process never vouches for the
        # operations its predecessor held.
        worker_id = f"{socket.gethostname()}:serve-{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.worker_ids[slot] = worker_id
        env = {**os.environ, "BROKEFORGE_WORKER_ID": worker_id}
        self.workers[slot] = self._spawn(
            "worker", "--concurrency", str(self.concurrency), env=env
        )

    def _fail_held_operations(self, slot: int, reason: str, reason_class: str) -> None:
        from brokeforge.lifecycle.reaper import fail_worker_operations
        from brokeforge.lifecycle.runner import durably

        durably(fail_worker_operations, self.worker_ids[slot], reason, reason_class)

    def step(self) -> None:
        """Restart every child that has exited; one pass of the loop."""
        for slot, web in enumerate(self.webs):
            if web is not None and web.poll() is not None:
                logger.error(
                    "web process %s exited (%s); restarting it",
                    web.pid,
                    describe_exit(web.returncode),
                    extra={"action": "web_exited", "pid": web.pid},
                )
                self.start_web(slot)
        for slot, child in enumerate(self.workers):
            if child is not None and child.poll() is not None:
                how = describe_exit(child.returncode)
                logger.error(
                    "worker process %s exited (%s); starting a new one",
                    child.pid,
                    how,
                    extra={"action": "worker_exited", "pid": child.pid},
                )
                self._fail_held_operations(
                    slot,
                    f"worker lost: worker process exited ({how}; signal 9 is "
                    "often the out-of-memory killer); the operation was not "
                    "re-run, and the server may have been changed part-way",
                    "worker_lost",
                )
                self.start_worker(slot)
        self._collect_metrics()
        if time.monotonic() - self._last_reap >= REAP_EVERY_SECONDS:
            self._last_reap = time.monotonic()
            self._reap()

    def _collect_metrics(self) -> None:
        """Read the monitoring samples of every server, on a timer.

        In a process of its own: a server that hangs cannot stall the
        supervisor, and a run still going when the next is due is not
        doubled. Its failures (an unreachable server) go to the log.
        """
        from django.conf import settings

        if not self.with_web:
            return
        if self.collector is not None and self.collector.poll() is None:
            return
        interval = settings.BROKEFORGE_METRICS_INTERVAL
        if time.monotonic() - self._last_collect < interval:
            return
        self._last_collect = time.monotonic()
        self.collector = self._spawn("metrics", "collect", quiet=True)

    def _reap(self) -> None:
        from django.db import DatabaseError, connections

        from brokeforge.lifecycle.reaper import reap

        try:
            reap()
        except DatabaseError as exc:
            logger.warning("reaper could not read the database: %s", exc)
        finally:
            connections.close_all()

    def stop(self) -> None:
        children = [
            c for c in [*self.webs, *self.workers, self.collector] if c is not None
        ]
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
        for slot, worker in enumerate(self.workers):
            if worker is not None:
                self._fail_held_operations(
                    slot,
                    "interrupted by a worker shutdown (BrokeForge was stopped "
                    "while the operation ran); the server may have been changed "
                    "part-way: Retry checks it again",
                    "worker_shutdown",
                )
        if self.listener is not None:
            self.listener.close()

    def run(self) -> int:
        def request_stop(signum: int, frame: FrameType | None) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        if self.with_web:
            for slot in range(len(self.webs)):
                self.start_web(slot)
        for slot in range(self.worker_count):
            self.start_worker(slot)
        where = "(no web) "
        if self.with_web:
            processes = len(self.webs)
            where = f"on http://{self.host}:{self.port}/ " + (
                f"({processes} web processes) " if processes > 1 else ""
            )
        print(
            f"BrokeForge is running {where}with {self.worker_count} worker(s) "
            f"of {self.concurrency} operation(s) at once; Ctrl-C stops it",
            flush=True,
        )
        while not self.stopping:
            self.step()
            time.sleep(POLL_SECONDS)
        print("stopping BrokeForge", flush=True)
        self.stop()
        return 0


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on host:port, for the web processes to share."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


def serve(args: argparse.Namespace) -> int:
    supervisor = Supervisor(
        args.host,
        args.port,
        args.workers,
        concurrency=args.concurrency,
        web_processes=args.web_processes,
    )
    try:
        supervisor.listen()
    except OSError as exc:
        problem = f"cannot listen on {args.host}:{args.port}: {exc.strerror}"
        if exc.errno == errno.EADDRINUSE:
            problem = f"{args.host}:{args.port} is already in use (another BrokeForge?)"
        print(f"error: {problem}; choose another with --port", file=sys.stderr)
        return 1
    _setup()
    return supervisor.run()


def web(args: argparse.Namespace) -> int:
    import django
    import uvicorn

    unpooled = _pool_connections()
    django.setup()
    from brokeforge.lifecycle.reaper import start_reaper_thread

    if unpooled:
        logger.warning(unpooled, extra={"action": "web_pool_missing"})

    # The web process reaps too: the promise holds while only it runs.
    start_reaper_thread()
    config = uvicorn.Config(
        "brokeforge.asgi:application",
        host=args.host,
        port=args.port,
        lifespan="off",
        log_level="info",
        # Open event streams never end by themselves: on shutdown give them
        # this long, then cut them (browsers reconnect and resume).
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    if args.fd is None:
        server.run()
    else:
        # The socket `serve` listens on, shared with its other web processes.
        server.run(sockets=[socket.socket(fileno=args.fd)])
    return 0


#: The web process's PostgreSQL connections (psycopg_pool's options).
WEB_POOL = {"min_size": 2, "max_size": 20, "timeout": 10}


def _pool_connections() -> str | None:
    """On PostgreSQL, let the web process take connections from a pool.

    Under ASGI each request runs in a thread of its own, so a connection
    kept by a thread (CONN_MAX_AGE) is never used again, and every request
    would pay for a new PostgreSQL backend. Workers keep theirs: their
    database threads live as long as they do. Must run before
    `django.setup()`; returns a warning for the log, which is not set up
    yet.
    """
    import importlib.util

    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.postgresql":
        return None
    if importlib.util.find_spec("psycopg_pool") is None:
        return (
            "psycopg_pool is not installed: every web request opens a new "
            "PostgreSQL connection (pip install 'brokeforge[postgres]')"
        )
    database["CONN_MAX_AGE"] = 0  # Django's pool keeps them instead
    database.setdefault("OPTIONS", {})["pool"] = dict(WEB_POOL)
    return None


def _raise_open_files_limit() -> None:
    """Every running operation holds a socket or two: take what the system
    allows rather than the usual soft limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def worker(args: argparse.Namespace) -> int:
    concurrency = args.concurrency
    if getattr(args, "processes", 1) > 1:
        # Several workers: supervise them like `serve` does, without the web.
        _setup()
        return Supervisor(
            "", 0, args.processes, with_web=False, concurrency=concurrency
        ).run()
    import django

    django.setup()
    from brokeforge.lifecycle import loop, workers
    from brokeforge.lifecycle.consumer import Consumer
    from brokeforge.lifecycle.reaper import fail_worker_operations, start_reaper_thread
    from brokeforge.lifecycle.runner import (
        SHUTDOWN,
        SHUTDOWN_NOW,
        durably,
        start_watchdog_thread,
        worker_id,
    )

    _raise_open_files_limit()
    this_worker = worker_id()
    durably(workers.register, this_worker)
    # What this host's dead workers left running fails now, not a lease later.
    durably(workers.end_previous_lives, this_worker)
    logger.info(
        "worker %s started, running up to %s operation(s) at once",
        this_worker,
        concurrency,
        extra={"action": "worker_started", "worker_id": this_worker},
    )
    consumer = Consumer(this_worker, concurrency)

    def request_stop(signum: int, frame: FrameType | None) -> None:
        if SHUTDOWN.is_set():
            # Asked twice: no grace; each operation writes "interrupted".
            SHUTDOWN_NOW.set()
            return
        logger.warning(
            "worker %s stopping (%s): no new work; running operations have "
            "a bounded grace",
            this_worker,
            signal.Signals(signum).name,
            extra={"action": "worker_stopping", "worker_id": this_worker},
        )
        SHUTDOWN.set()
        consumer.wake.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    loop.start()
    start_reaper_thread(worker=this_worker)
    start_watchdog_thread()
    ended_in_time = consumer.run()
    if not ended_in_time:
        durably(
            fail_worker_operations,
            this_worker,
            "interrupted by a worker shutdown: the operation did not end "
            "within the worker's stop time; the server may have been changed "
            "part-way: Retry checks it again",
            "worker_shutdown",
        )
    durably(workers.stopped, this_worker)
    logger.info("worker %s stopped", this_worker, extra={"action": "worker_stopped"})
    if not ended_in_time:
        # An operation thread is stuck; it would hold the interpreter's exit.
        logging.shutdown()
        os._exit(1)
    return 0
