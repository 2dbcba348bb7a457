"""The one job every system runs: a remote command over SSH on a loopback host.

BrokeForge runs it as a package kind (bench/probe.py); Celery and RQ run it
as a task that starts OpenSSH's `ssh` to the same host. The command first
writes a start line on the host, so a run that happens twice is seen.

The Celery app and the RQ function are configured by the environment the
benchmark gives their worker processes: BENCH_REDIS_URL and BENCH_SSH (the
`ssh` command line as JSON, up to the remote command).
"""

from __future__ import annotations

import json
import os
import subprocess
import time

from celery import Celery


def _ssh(command: str, tag: str) -> None:
    import redis

    # When the task began, for benchmark 2's overrun (its timeout's origin).
    client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    client.set(f"bench:entry:{tag}", repr(time.time()))
    argv = [*json.loads(os.environ["BENCH_SSH"]), command]
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, capture_output=True)


# Celery: Redis broker and result backend, acks_late and
# reject_on_worker_lost as the issue asks, every other setting its default.
app = Celery(
    "bench",
    broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:9/0"),
    backend=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:9/0"),
)
app.conf.task_acks_late = True
app.conf.task_reject_on_worker_lost = True


@app.task(name="bench.remote")
def celery_remote(command: str, tag: str) -> None:
    _ssh(command, tag)


def rq_remote(command: str, tag: str) -> None:
    """The same job for RQ (enqueued by its dotted path)."""
    _ssh(command, tag)
