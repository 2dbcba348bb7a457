"""Benchmark 6 of issue 7: a fleet of hosts, one install each, all at once.

A real `brokeforge serve` on a fresh SQLite database; N bench hosts
(bench/hosts.py: in-process SSH servers on loopback whose install takes
3 s). The benchmark registers every host through the API with one key and
pins its host key (the API's connection check), times one install alone,
then asks for an install on every host at once and waits until every
operation has ended. It does so twice, on a fresh installation each: N API
requests from 8 threads with the token, and one BrokeForge process asking
for each in a row through the services (bench/request_local.py), which
tells the engine's pace apart from the web process's. It reports the wall
time from the first request to the last operation's end, the peak memory
of BrokeForge's processes (RSS of `serve`, all its children and that
process, summed, sampled from /proc every 100 ms; shared pages count once
per process, so this overstates a little) and every record's status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bench.common import Goal, Section, percentile, seconds
from bench.hosts import HostFarm
from bench.instance import (
    REPO,
    Installation,
    MemorySampler,
    workdir,
)

KIND = "benchinstall"
INSTALL_SECONDS = 3.0
GIB = 1024**3
REQUEST_THREADS = 8


@dataclass
class FleetResult:
    hosts: int
    workers: int
    concurrency: int | None
    #: `serve --web-processes` (None: the default, one).
    web_processes: int | None
    install_seconds: float
    via: str = "api"
    one_alone: float = 0.0
    wall: float = 0.0
    requests: float = 0.0
    peak_rss: int = 0
    peak_processes: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: Most installs the farm saw running at the same moment.
    most_at_once: int = 0
    #: (started, finished) of each fleet operation, as the API reports them.
    spans: list[tuple[float, float]] = field(default_factory=list)
    #: Seconds each fleet operation waited from its request to its claim.
    waits: list[float] = field(default_factory=list)
    #: CPU seconds BrokeForge's processes used during the fleet run, per
    #: kind of process (serve, web, worker, bench.request_local).
    cpu: dict[str, float] = field(default_factory=dict)
    #: CPU seconds of the benchmark's own process meanwhile (the farm, the
    #: requests, the sampling).
    bench_cpu: float = 0.0


def concurrency_supported() -> bool:
    """Whether this BrokeForge's `serve` takes --concurrency."""
    result = subprocess.run(
        [sys.executable, "-m", "brokeforge", "serve", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "bench.settings"},
        check=False,
    )
    return "--concurrency" in result.stdout


def _timestamp(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def _wait_ended(
    bf: Installation, ids: set[int], timeout: float
) -> dict[int, dict[str, Any]]:
    """Poll the API until every operation in `ids` has ended."""
    deadline = time.monotonic() + timeout
    while True:
        ops = {op["id"]: op for op in bf.operations(limit=500) if op["id"] in ids}
        done = {i: op for i, op in ops.items() if op["finished_at"]}
        if len(done) == len(ids):
            return done
        if time.monotonic() > deadline:
            return done
        time.sleep(0.25)


def _ask_locally(asker: subprocess.Popen[str]) -> tuple[float, set[int], float]:
    """Let bench.request_local go (once ready); its start, operation ids and
    how long it took."""
    assert asker.stdin is not None and asker.stdout is not None
    asker.stdin.write("go\n")
    asker.stdin.flush()
    answer = json.loads(asker.stdout.readline())
    asker.wait(timeout=60)
    return answer["started"], set(answer["ids"]), answer["ended"] - answer["started"]


def most_at_once(farm: HostFarm) -> int:
    """The most install scripts the farm's hosts ran at one moment."""
    moments: list[tuple[float, int]] = []
    for seen in farm.all_execs():
        if seen.what.startswith("echo 'bench install") and seen.ended_at:
            moments += [(seen.at, 1), (seen.ended_at, -1)]
    running = best = 0
    for _, step in sorted(moments):
        running += step
        best = max(best, running)
    return best


def measure(
    hosts: int,
    *,
    workers: int,
    concurrency: int | None,
    install_seconds: float = INSTALL_SECONDS,
    via: str = "api",
    web_processes: int | None = None,
    database_url: str | None = None,
    timeout: float = 600,
) -> FleetResult:
    """Run the fleet once and return what was seen (no judging).

    `via` is how the installs are asked for: "api" (HTTP requests with a
    token from 8 threads) or "lifecycle" (one BrokeForge process asking for
    each in a row through the services, as the local CLI does).
    `database_url` is the installation's database (a fresh SQLite file when
    None).
    """
    from brokeforge.servers.keys import generate_key_pair

    result = FleetResult(
        hosts, workers, concurrency, web_processes, install_seconds, via=via
    )
    private_key, public_key = generate_key_pair()
    with (
        workdir("bench-fleet-") as path,
        HostFarm(hosts + 1, public_key, prefix="fleet") as farm,
        Installation(path, database_url) as bf,
    ):
        bf.create_account()
        bf.serve(workers=workers, concurrency=concurrency, web_processes=web_processes)
        ids = bf.add_servers(farm.hosts, private_key)
        solo, fleet = farm.hosts[0], farm.hosts[1:]
        params = {"params": {"seconds": install_seconds}}

        # One install alone: the yardstick (and the workers' warm-up).
        started = time.time()
        answer = bf.api("POST", f"/servers/{ids[solo.name]}/records/{KIND}", params)
        op_id = answer["operation"]["id"]
        ended = _wait_ended(bf, {op_id}, timeout=120)
        finished = _timestamp(ended[op_id]["finished_at"]) if ended else None
        if finished is None:
            raise RuntimeError(f"the single install did not end:\n{bf.log_tail()}")
        result.one_alone = finished - started

        def request(host: Any) -> int:
            path = f"/servers/{ids[host.name]}/records/{KIND}"
            return int(bf.api("POST", path, params)["operation"]["id"])

        asker = None
        if via == "lifecycle":
            asker = bf.start(
                "bench.request_local",
                KIND,
                str(install_seconds),
                *(host.name for host in fleet),
            )
            # Loading Django is not part of asking.
            assert asker.stdout is not None
            if asker.stdout.readline().strip() != "ready":
                raise RuntimeError("bench.request_local did not start")
        with MemorySampler(bf) as memory:
            own_cpu = time.process_time()
            if asker is None:
                started = time.time()
                with ThreadPoolExecutor(REQUEST_THREADS) as pool:
                    op_ids = set(pool.map(request, fleet))
                result.requests = time.time() - started
            else:
                started, op_ids, result.requests = _ask_locally(asker)
            ended = _wait_ended(bf, op_ids, timeout=timeout)
            last = max(
                (_timestamp(op["finished_at"]) or 0.0 for op in ended.values()),
                default=time.time(),
            )
            result.wall = last - started
            result.bench_cpu = time.process_time() - own_cpu
        result.peak_rss, result.peak_processes = memory.peak, memory.peak_processes
        result.cpu = memory.cpu_by_role()
        result.spans = [
            (_timestamp(op["started_at"]) or 0.0, _timestamp(op["finished_at"]) or 0.0)
            for op in ended.values()
        ]
        result.waits = [
            (_timestamp(op["started_at"]) or 0.0)
            - (_timestamp(op["created_at"]) or 0.0)
            for op in ended.values()
        ]
        result.most_at_once = most_at_once(farm)

        for host in fleet:
            record = bf.api("GET", f"/servers/{ids[host.name]}/records/{KIND}")
            status = record["status"]
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if record["error_message"]:
                result.errors.append(f"{host.name}: {record['error_message']}")
    return result


def _by_role(cpu: dict[str, float]) -> str:
    return ", ".join(f"{name} {used:.1f}" for name, used in sorted(cpu.items()))


def _pct(values: list[float], pct: float) -> float:
    return percentile(values, pct) if values else 0.0


VIA = {
    "api": "through the API (8 threads, one token)",
    "lifecycle": "through the lifecycle, in one process",
}


def run(quick: bool) -> Section:
    hosts = 20 if quick else 200
    workers = int(os.environ.get("BENCH_FLEET_WORKERS", "2"))
    concurrency: int | None = int(
        os.environ.get("BENCH_FLEET_CONCURRENCY", str(-(-hosts // workers)))
    )
    notes = []
    if not concurrency_supported():
        notes.append(
            "This BrokeForge's `serve` has no --concurrency: each worker "
            "process ran one operation at a time."
        )
        concurrency = None
    # Two web processes: the API's requests then use both CPUs.
    web_processes = int(os.environ.get("BENCH_FLEET_WEB_PROCESSES", "2"))
    results = [
        measure(
            hosts,
            workers=workers,
            concurrency=concurrency,
            via=via,
            web_processes=web_processes,
        )
        for via in VIA
    ]
    return section(results, notes)


def section(results: list[FleetResult], notes: list[str]) -> Section:
    first = results[0]
    setup = (
        f"--workers {first.workers}"
        + (f" --concurrency {first.concurrency}" if first.concurrency else "")
        + (f" --web-processes {first.web_processes}" if first.web_processes else "")
    )
    rows = [["one install alone", "1", seconds(first.one_alone), "", "1 active"]]
    goals = []
    described = [
        f"`brokeforge serve {setup}` on SQLite; {first.hosts} bench hosts "
        f"(bench/hosts.py) whose install takes {first.install_seconds:g} s. "
        "One install alone first (through the API), then one on every host, "
        "asked for at once, either through the API with a token from "
        f"{REQUEST_THREADS} threads, or from one BrokeForge process calling "
        "the services in a row (bench/request_local.py, what the local CLI "
        "does), on a fresh installation each. Wall time from the first "
        "request to the last operation's end; peak RSS summed over `serve`, "
        "its children and that process, sampled every 100 ms.",
    ]
    for result in results:
        active = result.statuses.get("active", 0)
        failed = result.statuses.get("failed", 0)
        other = result.hosts - active - failed
        how = VIA[result.via]
        rows.append(
            [
                f"{result.hosts} at once, {how}",
                str(result.hosts),
                seconds(result.wall),
                f"{result.peak_rss / 1024**2:.0f} MiB in "
                f"{result.peak_processes} processes",
                f"{active} active, {failed} failed, {other} not terminal",
            ]
        )
        ratio = result.wall / result.one_alone if result.one_alone else float("inf")
        goals += [
            Goal(
                f"{result.hosts} installs asked {how} end within twice the time of one",
                ratio <= 2,
                f"{seconds(result.wall)} = {ratio:.1f} x {seconds(result.one_alone)}",
            ),
            Goal(
                f"under 1 GiB in all ({result.via})",
                result.peak_rss < GIB,
                f"{result.peak_rss / 1024**2:.0f} MiB",
            ),
            Goal(
                f"every record terminal ({result.via})",
                other == 0,
                f"{active + failed} of {result.hosts}",
            ),
        ]
        runs = [end - start for start, end in result.spans]
        described.append(
            f"{how[0].upper()}{how[1:]}: asking took {seconds(result.requests)}; at "
            f"most {result.most_at_once} installs ran on the hosts at one "
            f"moment; from request to claim p50 {seconds(_pct(result.waits, 50))}"
            f", max {seconds(max(result.waits, default=0))}; from claim to end "
            f"p50 {seconds(_pct(runs, 50))}, max {seconds(max(runs, default=0))}"
            f". BrokeForge's processes used {sum(result.cpu.values()):.1f} CPU "
            f"seconds ({_by_role(result.cpu)}), the "
            f"benchmark's own (the farm's SSH servers, the requests) "
            f"{result.bench_cpu:.1f}, in {seconds(result.wall)} on "
            f"{os.cpu_count()} CPUs."
            + (
                " First errors: " + "; ".join(result.errors[:3])
                if result.errors
                else ""
            )
        )
    return Section(
        title="6. Fleet: one install on each of many hosts, at once",
        header=["run", "hosts", "wall time", "peak memory", "records"],
        rows=rows,
        goals=goals,
        notes=[*described, *notes],
    )
