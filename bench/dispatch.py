"""Benchmark 3 of issue 7: dispatch latency, SQLite and PostgreSQL.

From just before the HTTP request that creates an operation is sent to the
moment its first remote command (the facts script) reaches the host, as
the bench host records it (bench/hosts.py). A real `brokeforge serve`
(default worker settings) runs on a fresh SQLite database, then on a
private PostgreSQL cluster (bench/postgres.py). Each sample installs the
bench kind on a host of its own (an install of 0 s) after the previous one
has ended, so every request meets idle workers; a random pause of 0.2 to
0.7 s before each request keeps it from lining up with the workers' polls.

Besides p50 and p95 of the whole, the median of its stages is reported:
from the request to the operation row (`created_at`, written inside the
request's transaction: the web side), to its claim by a worker
(`started_at`: the queue's wake-up), to the TCP connection reaching the
host (the runner's start), and — the rest up to the whole — the SSH
handshake, host key check and login up to the first command.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bench import postgres
from bench.common import Goal, Section, percentile, seconds
from bench.hosts import HostFarm
from bench.instance import Installation, workdir

KIND = "benchinstall"
SAMPLES, QUICK_SAMPLES = 50, 5
WORKERS = 2


@dataclass
class DispatchResult:
    database: str
    #: Request sent -> first remote command on the host.
    latencies: list[float] = field(default_factory=list)
    #: Request sent -> operation row created (inside the request's transaction).
    created: list[float] = field(default_factory=list)
    #: Request sent -> operation claimed by a worker.
    claims: list[float] = field(default_factory=list)
    #: Request sent -> the host accepted BrokeForge's SSH connection.
    connected: list[float] = field(default_factory=list)
    #: Request sent -> the API's answer.
    answers: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def measure(database: str, database_url: str | None, samples: int) -> DispatchResult:
    """Run `samples` dispatches on one installation (no judging)."""
    from brokeforge.servers.keys import generate_key_pair

    result = DispatchResult(database)
    private_key, public_key = generate_key_pair()
    rng = random.Random(7)  # noqa: S311 (pauses, not secrets)
    with (
        workdir("bench-dispatch-") as path,
        HostFarm(samples + 1, public_key, prefix="dispatch") as farm,
        Installation(path, database_url) as bf,
    ):
        bf.create_account()
        bf.serve(workers=WORKERS)
        ids = bf.add_servers(farm.hosts, private_key)
        params = {"params": {"seconds": 0}}
        for index, host in enumerate(farm.hosts):
            time.sleep(rng.uniform(0.2, 0.7))
            sent = time.time()
            answer = bf.api("POST", f"/servers/{ids[host.name]}/records/{KIND}", params)
            answered = time.time()
            first = farm.wait_exec(host, sent, timeout=60)
            op_id = answer["operation"]["id"]
            op = _wait_ended(bf, op_id)
            if op["state"] != "succeeded":
                result.failures.append(f"{host.name}: {op['error_message']}")
            if index == 0:
                continue  # the warm-up: first imports, first connections
            result.latencies.append(first.at - sent)
            result.answers.append(answered - sent)
            result.created.append(_at(op["created_at"]) - sent)
            result.connected.append(
                min((t for t in host.connections if t >= sent), default=first.at) - sent
            )
            if op["started_at"]:
                result.claims.append(_at(op["started_at"]) - sent)
    return result


def _at(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def _wait_ended(bf: Installation, op_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        op: dict[str, Any] = bf.api("GET", f"/operations/{op_id}")
        if op["finished_at"] or time.monotonic() > deadline:
            return op
        time.sleep(0.05)


def run(quick: bool) -> Section:
    samples = QUICK_SAMPLES if quick else SAMPLES
    results = [measure("SQLite", None, samples)]
    notes: list[str] = []
    try:
        with postgres.cluster() as url:
            results.append(measure(f"PostgreSQL {postgres.version()}", url, samples))
    except postgres.NoPostgres as exc:
        notes.append(f"PostgreSQL skipped: {exc}.")
    return section(results, samples, notes)


def section(results: list[DispatchResult], samples: int, notes: list[str]) -> Section:
    rows, goals = [], []
    for r in results:
        p50, p95 = percentile(r.latencies, 50), percentile(r.latencies, 95)
        rows.append(
            [
                r.database,
                seconds(p50),
                seconds(p95),
                seconds(percentile(r.created, 50)),
                seconds(percentile(r.claims, 50)) if r.claims else "",
                seconds(percentile(r.connected, 50)),
                seconds(percentile(r.answers, 50)),
                str(len(r.failures)),
            ]
        )
        limit = 1.0 if r.database == "SQLite" else 0.05
        goals.append(
            Goal(
                f"dispatch p50 under {seconds(limit)} on {r.database}",
                p50 < limit,
                seconds(p50),
            )
        )
        if r.failures:
            notes.append(f"{r.database} failures: " + "; ".join(r.failures[:3]))
    notes.insert(
        0,
        f"{samples} samples per database after one warm-up: `brokeforge serve "
        f"--workers {WORKERS}` (default settings), one install of the bench kind "
        "(0 s) on a host of its own each time, asked through the API with a "
        "token after the previous one ended and a random 0.2-0.7 s pause; "
        "timed from just before the request to the facts script reaching the "
        "bench host (bench/hosts.py). PostgreSQL: a private cluster on a Unix "
        "socket with durable commits (fsync on).",
    )
    return Section(
        title="3. Dispatch latency: request to first remote command",
        header=[
            "database",
            "p50",
            "p95",
            "p50 to operation row",
            "p50 to claim",
            "p50 to SSH connection",
            "p50 API answer",
            "failed",
        ],
        rows=rows,
        goals=goals,
        notes=notes,
    )
