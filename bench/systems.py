"""The three systems of benchmarks 1 and 2, behind one small interface.

Each can start its deployment, take the job, name the process running it,
kill its whole worker, and say what it reports about the job right now:
`failed` (it says the job failed), or None (it says nothing yet). Whether
the job ran again is read on the host (bench/remote.py's start lines), the
same way for all three.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.remote import remote_command
from bench.rigs import (
    Host,
    Processes,
    Redis,
    child_pids,
    free_port,
    python,
    ssh_env,
    wait_for,
)


class System:
    name = ""
    #: What "the whole worker" is, in the table.
    whole_worker = ""

    def start(self, whole: bool = False) -> None:
        raise NotImplementedError

    def submit(self, mode: str, tag: str, timeout: int | None = None) -> Any:
        raise NotImplementedError

    def job_pid(self, job: Any) -> int:
        """The process running the job."""
        raise NotImplementedError

    def kill_whole_worker(self) -> float:
        """SIGKILL the worker, parent and children; returns when."""
        raise NotImplementedError

    def report(self, job: Any) -> str | None:
        raise NotImplementedError

    def started_at(self, job: Any) -> float | None:
        """When the system itself says the job started (its timeout's origin)."""
        raise NotImplementedError

    def reason(self, job: Any) -> str:
        """The reason the system gives for the job's failure."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def log_tail(self) -> str:
        return ""


class BrokeForge(System):
    """A real `brokeforge serve` (or `web` + `worker`) on a temp SQLite database.

    This process is a BrokeForge client on the same database: it asks for the
    operation through the packages service, as the web app and CLI do, and
    reads the operation's state as `brokeforge status` does.
    """

    name = "BrokeForge"
    whole_worker = "`brokeforge worker` killed; `web` alive, no worker restarted"

    def __init__(
        self, workdir: Path, host: Host, database_url: str | None = None
    ) -> None:
        self.host = host
        home = workdir / "brokeforge-home"
        settings = {
            "BROKEFORGE_HOME": str(home),
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "BROKEFORGE_LOG_LEVEL": "INFO",
        }
        os.environ.update(settings)
        # SQLite in the temp home unless a database is given.
        os.environ.pop("BROKEFORGE_DATABASE_URL", None)
        if database_url:
            os.environ["BROKEFORGE_DATABASE_URL"] = database_url
            self.name = "BrokeForge (PostgreSQL)"
        else:
            self.name = "BrokeForge (SQLite)"
        self.processes = Processes(workdir, dict(os.environ))

        from brokeforge.home import setup_django

        setup_django()
        # This process only asks and reads; the workers' logs go to files.
        logging.getLogger("brokeforge").setLevel(logging.WARNING)
        from django.contrib.auth.models import User

        from brokeforge.servers.service import add_server

        self.user = User.objects.create_user("bench", password=None)
        self.server = add_server(
            "bench",
            host.debian.host,
            port=host.debian.port,
            private_key=host.private_key,
            owner=self.user,
        )

    def start(self, whole: bool = False) -> None:
        from brokeforge.lifecycle.models import Worker

        known = set(Worker.objects.values_list("id", flat=True))
        port = str(free_port())
        brokeforge = [python(), "-m", "brokeforge"]
        if whole:
            # The worker alone in its process group, the web app beside it.
            self.processes.start("web", [*brokeforge, "web", "--port", port])
            self.worker = self.processes.start("worker", [*brokeforge, "worker"])
        else:
            self.processes.start(
                "serve", [*brokeforge, "serve", "--port", port, "--workers", "1"]
            )
        wait_for(
            lambda: (
                Worker.objects.exclude(id__in=known)
                .filter(stopped_at__isnull=True)
                .exists()
            ),
            60,
            f"a BrokeForge worker to register\n{self.processes.tail()}",
            interval=0.1,
        )

    def submit(self, mode: str, tag: str, timeout: int | None = None) -> Any:
        from django.db import transaction

        from brokeforge.lifecycle.models import Operation
        from brokeforge.packages.models import Database
        from brokeforge.packages.service import request_action

        # The previous run's record goes, so the kind can be installed again.
        Database.objects.filter(server=self.server).delete()
        with transaction.atomic():
            operation = request_action(
                self.server,
                "benchjob",
                "install",
                user=self.user,
                params={"mode": mode, "tag": tag, "seconds": 30},
            )
            if timeout is not None:
                # In the same transaction: no worker sees it before its limit.
                Operation.objects.filter(pk=operation.pk).update(
                    timeout_seconds=timeout
                )
        return operation

    def job_pid(self, job: Any) -> int:
        from brokeforge.lifecycle.models import Worker

        job.refresh_from_db()
        return int(Worker.objects.get(id=job.worker_id).pid)

    def kill_whole_worker(self) -> float:
        return kill_tree(self.worker)

    def report(self, job: Any) -> str | None:
        from brokeforge.lifecycle.models import TERMINAL_STATES

        job.refresh_from_db()
        if job.state in TERMINAL_STATES:
            return str(job.state)
        return None

    def reason(self, job: Any) -> str:
        job.refresh_from_db()
        return str(job.error_message)

    def started_at(self, job: Any) -> float | None:
        job.refresh_from_db()
        started: datetime | None = job.started_at
        return started.timestamp() if started else None

    def stop(self) -> None:
        self.processes.stop_all()

    def log_tail(self) -> str:
        return self.processes.tail()


class _RedisSystem(System):
    def __init__(self, workdir: Path, host: Host, redis: Redis) -> None:
        import redis as redis_client

        self.redis = redis
        self.client = redis_client.Redis.from_url(redis.url)
        # bench.jobs reads these when first imported, here and in the workers.
        os.environ.update(ssh_env(host, redis.url))
        env = dict(os.environ)
        self.processes = Processes(workdir, env)
        self.worker: Any = None
        self.count = 0

    def kill_whole_worker(self) -> float:
        return kill_tree(self.worker)
        # A service manager starts a new worker, as it would in production:
        # the only process left that could notice the lost job.
        self._start_worker()

    def _start_worker(self) -> None:
        raise NotImplementedError

    def start(self, whole: bool = False) -> None:
        self.client.flushall()
        self._start_worker()

    def job_pid(self, job: Any) -> int:
        children = child_pids(self.worker.pid)
        if len(children) != 1:
            raise RuntimeError(
                f"{self.name}: expected one child running the job, found {children}"
            )
        return children[0]

    def started_at(self, job: Any) -> float | None:
        # Written by the task itself when it begins (bench/jobs.py).
        value = self.client.get(f"bench:entry:{self.tag_of(job)}")
        return float(value) if value else None

    def tag_of(self, job: Any) -> str:
        raise NotImplementedError

    def stop(self) -> None:
        self.processes.stop_all()

    def log_tail(self) -> str:
        return self.processes.tail()


class Celery(_RedisSystem):
    name = "Celery"
    whole_worker = "worker main process and its pool child killed; a new worker started"

    def _start_worker(self) -> None:
        self.count += 1
        self.worker = self.processes.start(
            "celery",
            [
                python(), "-m", "celery", "-A", "bench.jobs", "worker",
                "--concurrency", "1", "--loglevel", "INFO",
                "--hostname", f"bench{self.count}@localhost",
            ],
        )  # fmt: skip
        log = self.processes.logs[-1]
        wait_for(
            lambda: "ready." in log.read_text(errors="replace"),
            60,
            f"the Celery worker to be ready\n{self.processes.tail()}",
            interval=0.1,
        )

    def submit(self, mode: str, tag: str, timeout: int | None = None) -> Any:
        from bench.jobs import celery_remote

        options: dict[str, Any] = {}
        if timeout is not None:
            options["time_limit"] = timeout
        result = celery_remote.apply_async(
            args=[remote_command(mode, tag)], kwargs={"tag": tag}, **options
        )
        result.bench_tag = tag
        return result

    def tag_of(self, job: Any) -> str:
        return str(job.bench_tag)

    def report(self, job: Any) -> str | None:
        state = job.state
        if state == "FAILURE":
            return "failed"
        return None

    def reason(self, job: Any) -> str:
        return repr(job.result)


class RQ(_RedisSystem):
    name = "RQ"
    whole_worker = "worker and its work-horse killed; a new worker started"

    def _start_worker(self) -> None:
        from rq import Worker

        self.count += 1
        name = f"bench{self.count}"
        rq = str(Path(python()).with_name("rq"))
        self.worker = self.processes.start(
            "rq", [rq, "worker", "--url", self.redis.url, "--name", name, "default"]
        )
        wait_for(
            lambda: any(w.name == name for w in Worker.all(connection=self.client)),
            60,
            f"the RQ worker to register\n{self.processes.tail()}",
            interval=0.1,
        )

    def submit(self, mode: str, tag: str, timeout: int | None = None) -> Any:
        from rq import Queue

        queue = Queue("default", connection=self.client)
        options: dict[str, Any] = {}
        if timeout is not None:
            options["job_timeout"] = timeout
        return queue.enqueue(
            "bench.jobs.rq_remote", remote_command(mode, tag), tag=tag, **options
        )

    def tag_of(self, job: Any) -> str:
        return str(job.kwargs["tag"])

    def report(self, job: Any) -> str | None:
        status = job.get_status(refresh=True)
        value = getattr(status, "value", status)
        if value in ("failed", "stopped", "canceled"):
            return str(value)
        return None

    def started_at(self, job: Any) -> float | None:
        # RQ's own record of when the work-horse began the job.
        job.refresh()
        started: datetime | None = job.started_at
        if started is None:
            return None
        if started.tzinfo is None:
            started = started.replace(tzinfo=UTC)
        return started.timestamp()

    def reason(self, job: Any) -> str:
        job.refresh()
        info = job.latest_result()
        return str(info.exc_string if info else "")[-200:]


def kill_tree(process: Any) -> float:
    """SIGKILL a worker's main process and its children (pool child, work
    horse) at once; returns when. What those children started (the `ssh`
    client) is left, as a kill of the worker leaves it."""
    pids = [process.pid, *child_pids(process.pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    killed = time.time()
    process.wait(timeout=30)
    return killed


def kill(pid: int) -> float:
    """SIGKILL `pid`; returns when it was sent."""
    os.kill(pid, signal.SIGKILL)
    return time.time()
