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

import time
from dataclasses import dataclass

from bench.common import Goal, Section, spread
from bench.rigs import Host, Redis, wait_for, workdir
from bench.systems import RQ, BrokeForge, Celery, System

LIMIT = 5


@dataclass
class Run:
    #: From the limit to the system reporting the job failed (None: not within the cap).
    past_limit: float | None
    reported: str
    #: The hung remote command still running 3 s after the report.
    left_running: bool
    reason: str


def one_run(system: System, host: Host, *, tag: str, cap: float) -> Run:
    system.start()
    try:
        job = system.submit("block", tag, timeout=LIMIT)
        host.wait_start(tag, 60)
        came = _within(system, job, cap)
        seen = time.time()
        reported = system.report(job) if came else None
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


def _within(system: System, job: object, cap: float) -> bool:
    """Wait up to `cap` for a report; True if one came."""
    deadline = time.time() + cap
    while time.time() < deadline:
        if system.report(job):
            return True
        time.sleep(0.02)
    return False


def run(quick: bool) -> Section:
    repeat = 1 if quick else 5
    cap = LIMIT + (25.0 if quick else 60.0)
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
    results: dict[str, list[Run]] = {}
    with workdir("bench-timeout-") as tmp, Host(tmp) as host, Redis(tmp) as redis:
        systems: list[System] = [
            BrokeForge(tmp, host),
            Celery(tmp, host, redis),
            RQ(tmp, host, redis),
        ]
        for system in systems:
            runs = []
            for index in range(repeat):
                tag = f"{system.name.lower()}-t{index}"
                try:
                    runs.append(one_run(system, host, tag=tag, cap=cap))
                except Exception as exc:
                    raise RuntimeError(
                        f"{system.name}, {tag}: {exc}\n{system.log_tail()}"
                    ) from exc
            results[system.name] = runs
            past = [r.past_limit for r in runs if r.past_limit is not None]
            missing = len(runs) - len(past)
            figure = spread(past) if past else f"> {cap - LIMIT:.0f} s, not reported"
            if past and missing:
                figure += f" ({missing} of {len(runs)} runs not reported)"
            said = ", ".join(sorted({r.reported for r in runs if r.reported})) or (
                "nothing"
            )
            left = sum(r.left_running for r in runs)
            section.rows.append(
                [system.name, f"{LIMIT} s", said, figure, f"{left} of {len(runs)}"]
            )
    ours = results["BrokeForge"]
    worst = [r.past_limit for r in ours]
    met = all(p is not None and p <= 2.0 for p in worst)
    section.goals.append(
        Goal(
            "timeout overrun at most 2 s",
            met,
            (
                f"worst {max(p for p in worst if p is not None):.2f} s"
                if all(p is not None for p in worst)
                else "not reported within the cap"
            ),
        )
    )
    section.notes += [
        f"Job: `cat` on a fifo nobody writes to, over SSH on a Debian host on "
        f"loopback, with a {LIMIT} s limit; {repeat} run(s) per system, each on "
        "freshly started processes; states read every 20 ms.",
        "Celery: `time_limit` (the hard limit), Redis broker and backend, "
        "`acks_late`, `task_reject_on_worker_lost`, `--concurrency 1`. RQ "
        "2.12 (the issue names 3.0; PyPI has 2.12): `job_timeout`, otherwise "
        "defaults. Their task runs OpenSSH's `ssh`.",
        f"BrokeForge's reason: “{ours[0].reason[:160]}”; Celery's: "
        f"“{results['Celery'][0].reason[:120]}”; RQ's: "
        f"“{_last_line(results['RQ'][0].reason)[:120]}”.",
    ]
    return section


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""
