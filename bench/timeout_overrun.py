"""Benchmark 2: timeout overrun.

The same job under each system: a remote command over SSH on the loopback
Debian host that hangs in a blocking read (`cat` on a fifo nobody writes
to), given a time limit (BrokeForge: the operation's timeout; Celery: the
task's `time_limit`; RQ: the job's `job_timeout`). Each system's state is
read every 20 ms; the figure is how long after the limit it reports the job
failed, the limit counted from when the system itself says the job began
(BrokeForge: the operation's `started_at`; RQ: the job's `started_at`;
Celery, which keeps no start time by default: the task's first line, which
writes the time to Redis).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from bench.common import Goal, Section, spread
from bench.rigs import (
    Host,
    Postgres,
    Redis,
    postgres_bindir,
    run_in_child,
    unwind_on_sigterm,
    wait_for,
    workdir,
)
from bench.systems import RQ, BrokeForge, Celery, System

LIMIT = 5


@dataclass
class Run:
    #: From the limit to the report (None: not reported within the cap).
    past_limit: float | None
    reported: str
    #: The hung remote command still running 3 s after the report.
    left_running: bool
    reason: str


def settings(quick: bool) -> tuple[int, float]:
    """Repetitions, and the cap on waiting for a report."""
    return (1, LIMIT + 25.0) if quick else (5, LIMIT + 60.0)


def one_run(system: System, host: Host, *, tag: str, cap: float) -> Run:
    system.start()
    try:
        job = system.submit("block", tag, timeout=LIMIT)
        host.wait_start(tag, 60)
        deadline = time.time() + cap
        reported = None
        while time.time() < deadline and not reported:
            reported = system.report(job)
            if not reported:
                time.sleep(0.02)
        seen = time.time()
        began = system.started_at(job)
        if began is None:
            raise RuntimeError(f"{system.name} did not say when the job began")
        past = seen - (began + LIMIT) if reported else None
        left_running = False
        if reported:
            time.sleep(3)
            left_running = bool(host.job_pids())
        reason = system.reason(job) if reported else ""
        return Run(past, reported or "", left_running, reason)
    finally:
        system.stop()
        host.kill_jobs()
        wait_for(lambda: not host.job_pids(), 10, "the job's remote commands to end")


def runs_of(system: System, host: Host, quick: bool) -> list[Run]:
    repeat, cap = settings(quick)
    runs = []
    for index in range(repeat):
        tag = f"{system.name.split()[0].lower()}-t{index}"
        try:
            runs.append(one_run(system, host, tag=tag, cap=cap))
        except Exception as exc:
            raise RuntimeError(
                f"{system.name}, {tag}: {exc}\n{system.log_tail()}"
            ) from exc
    return runs


def brokeforge_runs(database: str, quick: bool) -> dict[str, Any]:
    """BrokeForge's row on one database, in a child process of its own."""
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(workdir("bench-timeout-bf-"))
        host = stack.enter_context(Host(tmp))
        url = None
        if database == "postgresql":
            url = stack.enter_context(Postgres(tmp)).url
        system = BrokeForge(tmp, host, url)
        return {
            "name": system.name,
            "runs": [asdict(r) for r in runs_of(system, host, quick)],
        }


def row(name: str, runs: list[Run], cap: float) -> list[str]:
    past = [r.past_limit for r in runs if r.past_limit is not None]
    missing = len(runs) - len(past)
    figure = spread(past) if past else f"> {cap - LIMIT:.0f} s, not reported"
    if past and missing:
        figure += f" ({missing} of {len(runs)} runs not reported)"
    said = ", ".join(sorted({r.reported for r in runs if r.reported})) or "nothing"
    left = sum(r.left_running for r in runs)
    return [name, f"{LIMIT} s", said, figure, f"{left} of {len(runs)}"]


def run(quick: bool) -> Section:
    repeat, cap = settings(quick)
    section = Section(
        title="2. Timeout overrun",
        header=[
            "system",
            "limit",
            "reports",
            "reported past the limit (min / median / max)",
            "hung remote command still running 3 s after the report",
        ],
    )
    databases = ["sqlite"] + (["postgresql"] if postgres_bindir() else [])
    ours = [run_in_child("timeout_overrun", db, quick) for db in databases]
    theirs: dict[str, list[Run]] = {}
    with workdir("bench-timeout-") as tmp, Host(tmp) as host, Redis(tmp) as redis:
        for system in (Celery(tmp, host, redis), RQ(tmp, host, redis)):
            theirs[system.name] = runs_of(system, host, quick)
    for side in ours:
        section.rows.append(row(side["name"], [Run(**r) for r in side["runs"]], cap))
    for name, runs in theirs.items():
        section.rows.append(row(name, runs, cap))

    figures = []
    met = True
    for side in ours:
        past = [Run(**r).past_limit for r in side["runs"]]
        known = [p for p in past if p is not None]
        if len(known) == len(past):
            figures.append(f"{side['name']}: worst {max(known):.2f} s")
            met = met and max(known) <= 2.0
        else:
            figures.append(f"{side['name']}: not reported within the cap")
            met = False
    section.goals.append(Goal("timeout overrun at most 2 s", met, "; ".join(figures)))
    section.notes += [
        f"Job: `cat` on a fifo nobody writes to, over SSH on a Debian host on "
        f"loopback, with a {LIMIT} s limit; {repeat} run(s) per system, each on "
        "freshly started processes; states read every 20 ms.",
        "BrokeForge: `brokeforge serve --workers 1`, the operation's timeout set "
        "to the limit. Celery: `time_limit` (the hard limit), Redis broker and "
        "backend, `acks_late`, `task_reject_on_worker_lost`, `--concurrency 1`. "
        "RQ 2.12 (the issue names 3.0; PyPI has 2.12): `job_timeout`, otherwise "
        "defaults. Their task runs OpenSSH's `ssh`, whose remote command "
        "outlives the task they end.",
        f"Reasons given: BrokeForge “{ours[0]['runs'][0]['reason'][:160]}”; "
        f"Celery “{theirs['Celery'][0].reason[:120]}”; "
        f"RQ “{_last_line(theirs['RQ'][0].reason)[:120]}”.",
    ]
    return section


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--brokeforge", choices=["sqlite", "postgresql"], required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    unwind_on_sigterm()
    print(json.dumps(brokeforge_runs(args.brokeforge, args.quick)))
