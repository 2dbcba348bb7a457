"""Monitoring: a metrics collector on a timer, and the samples it leaves.

Install writes a small collector (`COLLECTOR`) that appends one line —
time, CPU busy %, memory used %, disk used % of `/`, 1-minute load — to
`SAMPLES` and keeps the newest `KEEP_SAMPLES`. It runs every `interval`
minutes: from a systemd timer where systemd runs, otherwise from a file in
`/etc/cron.d` (installing and starting cron if it is missing; removing
monitoring leaves cron, which other things may use). Update rewrites both,
with a new interval when one is given.

BrokeForge reads the sample file at the end of every monitoring operation
and whenever `collect` runs (`brokeforge metrics collect`), and keeps the
samples as `MetricSample` rows for the server page's chart.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings

from brokeforge.lifecycle.errors import ActionRefused
from brokeforge.lifecycle.models import Action, ManagedRecord, Operation
from brokeforge.packages import validators
from brokeforge.packages.apt import q, script_header
from brokeforge.packages.base import Field, HostFacts, PackageKind
from brokeforge.packages.models import MetricSample, Monitor

if TYPE_CHECKING:
    from brokeforge.servers.models import Server

logger = logging.getLogger(__name__)

COLLECTOR = "/usr/local/lib/brokeforge/collect-metrics"
SAMPLES = "/var/lib/brokeforge/metrics/samples"
CRON_FILE = "/etc/cron.d/brokeforge-metrics"
UNIT = "brokeforge-metrics"
KEEP_SAMPLES = 1440
#: Minutes between samples that both cron and systemd express evenly.
INTERVALS = (1, 2, 5, 10, 15, 30, 60)
DEFAULT_INTERVAL = 5
#: Samples shown on the server page's chart.
CHART_SAMPLES = 120

# "EPOCH CPU MEM DISK LOAD"; anything else in the file is ignored.
_SAMPLE = re.compile(
    r"sample ([0-9]{9,11}) ([0-9]{1,3}\.[0-9]) ([0-9]{1,3}\.[0-9]) "
    r"([0-9]{1,3}(?:\.[0-9])?) ([0-9]{1,5}\.[0-9]{2})"
)

COLLECTOR_SCRIPT = r"""#!/bin/bash
# Written by BrokeForge (monitoring); removed with it. One sample of CPU,
# memory, disk and load, appended to SAMPLES_FILE.
set -euo pipefail
out=SAMPLES_FILE
mkdir -p "${out%/*}"
exec 9>"$out.lock"
flock 9
read -r _ u1 n1 s1 i1 w1 q1 sq1 st1 _ </proc/stat
sleep 1
read -r _ u2 n2 s2 i2 w2 q2 sq2 st2 _ </proc/stat
busy=$(((u2 + n2 + s2 + q2 + sq2 + st2) - (u1 + n1 + s1 + q1 + sq1 + st1)))
idle=$(((i2 + w2) - (i1 + w1)))
mem_total=$(awk '$1 == "MemTotal:" {print $2}' /proc/meminfo)
mem_free=$(awk '$1 == "MemAvailable:" {print $2}' /proc/meminfo)
disk=$(df -P / | awk 'NR == 2 {sub("%", "", $5); print $5}')
load=$(cut -d ' ' -f 1 /proc/loadavg)
awk -v t="$(date +%s)" -v b="$busy" -v i="$idle" -v mt="$mem_total" \
  -v mf="$mem_free" -v d="$disk" -v l="$load" 'BEGIN {
    cpu = (b + i > 0) ? 100 * b / (b + i) : 0
    printf "%d %.1f %.1f %.1f %.2f\n", t, cpu, 100 * (mt - mf) / mt, d, l
  }' >>"$out"
tail -n KEEP "$out" >"$out.tmp"
mv "$out.tmp" "$out"
"""


# cron's own pid file, not pgrep: a process table shared with containers or
# chroots may show someone else's cron.
MONITORING_FUNCTIONS = r"""
bf_cron_running() {
  [ -s /run/crond.pid ] && kill -0 "$(cat /run/crond.pid)" 2>/dev/null
}
"""


def clean_interval(value: Any) -> int:
    text = str(value).strip(" ") if value is not None else ""
    if isinstance(value, bool) or not re.fullmatch(r"[0-9]{1,2}", text):
        raise ActionRefused(_interval_hint(value))
    minutes = int(text)
    if minutes not in INTERVALS:
        raise ActionRefused(_interval_hint(value))
    return minutes


def _interval_hint(value: Any) -> str:
    choices = ", ".join(str(i) for i in INTERVALS)
    return f"the interval is one of {choices} minutes, not {value!r}"


def cron_line(interval: int) -> str:
    minutes = "0" if interval == 60 else f"*/{interval}"
    return f"{minutes} * * * * root {COLLECTOR} >/dev/null 2>&1"


def calendar(interval: int) -> str:
    return "hourly" if interval == 60 else f"*:0/{interval}"


class Monitoring(PackageKind):
    name = "monitoring"
    label = "Monitoring"
    family = "monitoring"
    model = Monitor
    timeouts = {"install": 600, "update": 300, "remove": 120}
    update_fields = (
        Field(
            "interval",
            "Minutes between samples",
            choices=tuple((str(i), str(i)) for i in INTERVALS),
            default=str(DEFAULT_INTERVAL),
        ),
    )

    def clean_params(self, action: Action, params: Mapping[str, Any]) -> dict[str, Any]:
        allowed = set() if action == Action.REMOVE else {"interval"}
        validators.refuse_unknown(
            params, allowed, f"unknown option for {action} of monitoring"
        )
        with validators.option("interval"):
            if action == Action.INSTALL:
                return {"interval": clean_interval(params.get("interval", 5))}
            if action == Action.UPDATE and "interval" in params:
                return {"interval": clean_interval(params["interval"])}
        return {}

    def new_record(self, server: Server, clean: Mapping[str, Any]) -> ManagedRecord:
        return Monitor(server=server, interval=clean["interval"])

    def identity(self, record: ManagedRecord) -> dict[str, Any]:
        # An update without a new interval keeps the record's.
        assert isinstance(record, Monitor)
        return {"interval": record.interval}

    def describe(self, record: ManagedRecord) -> str:
        assert isinstance(record, Monitor)
        return f"Monitoring (every {record.interval} min)"

    def script(
        self, action: Action, facts: HostFacts, params: Mapping[str, Any]
    ) -> str:
        header = script_header(facts) + MONITORING_FUNCTIONS
        if action == Action.REMOVE:
            return header + _remove_steps(facts)
        interval = clean_interval(params.get("interval"))
        collector = COLLECTOR_SCRIPT.replace("SAMPLES_FILE", q(SAMPLES)).replace(
            "KEEP", str(KEEP_SAMPLES)
        )
        steps = (
            f"mkdir -p {q(COLLECTOR.rsplit('/', 1)[0])}\n"
            f"cat >{q(COLLECTOR)} <<'BROKEFORGE_COLLECTOR'\n"
            f"{collector}BROKEFORGE_COLLECTOR\n"
            f"chmod 0755 {q(COLLECTOR)}\n"
        )
        if facts.has_systemd:
            steps += _systemd_steps(interval)
        else:
            steps += _cron_steps(interval)
        return (
            header
            + steps
            + (
                "# A first sample now, so the chart has something to show.\n"
                f"{q(COLLECTOR)}\n"
            )
        )

    def verify_script(
        self,
        action: Action,
        facts: HostFacts,
        params: Mapping[str, Any] | None = None,
    ) -> str:
        header = script_header(facts) + MONITORING_FUNCTIONS
        if action == Action.REMOVE:
            paths = " ".join(
                q(p)
                for p in (
                    COLLECTOR,
                    SAMPLES,
                    CRON_FILE,
                    f"/etc/systemd/system/{UNIT}.timer",
                    f"/etc/systemd/system/{UNIT}.service",
                )
            )
            return header + (
                f"for path in {paths}; do\n"
                '  if [ -e "$path" ]; then\n'
                '    echo "$path is still there" >&2; exit 1\n'
                "  fi\n"
                "done\n"
                "echo removed\n"
            )
        if facts.has_systemd:
            timer = (
                f"systemctl is-active --quiet {UNIT}.timer || "
                f"{{ echo 'the {UNIT} timer is not active' >&2; exit 1; }}\n"
            )
        else:
            timer = (
                f"grep -q {q(COLLECTOR)} {q(CRON_FILE)} || "
                f"{{ echo '{CRON_FILE} does not run the collector' >&2; exit 1; }}\n"
                "bf_cron_running || { echo 'cron is not running' >&2; exit 1; }\n"
            )
        return header + (
            f"test -x {q(COLLECTOR)} || "
            f"{{ echo '{COLLECTOR} is missing' >&2; exit 1; }}\n"
            + timer
            + f"test -s {q(SAMPLES)} || "
            f"{{ echo 'the collector has written no sample' >&2; exit 1; }}\n"
            f"tail -n {CHART_SAMPLES} {q(SAMPLES)} | sed 's/^/sample /'\n"
        )

    def after_verify(self, operation: Operation, output: str) -> None:
        if operation.action == Action.REMOVE:
            return
        if "interval" in operation.params:
            Monitor.objects.filter(pk=operation.record_id).update(
                interval=clean_interval(operation.params["interval"])
            )
        store_samples(operation.server, parse_samples(output))


def _cron_steps(interval: int) -> str:
    return (
        "if ! bf_is_installed cron; then\n"
        "  bf_apt_update\n"
        "  bf_apt install cron\n"
        "fi\n"
        "bf_cron_running || bf_service start cron\n"
        f"cat >{q(CRON_FILE)} <<'BROKEFORGE_CRON'\n"
        "# Written by BrokeForge (monitoring); removed with it.\n"
        f"{cron_line(interval)}\n"
        "BROKEFORGE_CRON\n"
        f"chmod 0644 {q(CRON_FILE)}\n"
    )


def _systemd_steps(interval: int) -> str:
    return (
        f"cat >/etc/systemd/system/{UNIT}.service <<'BROKEFORGE_UNIT'\n"
        "[Unit]\nDescription=BrokeForge metrics sample\n\n"
        f"[Service]\nType=oneshot\nExecStart={COLLECTOR}\n"
        "BROKEFORGE_UNIT\n"
        f"cat >/etc/systemd/system/{UNIT}.timer <<'BROKEFORGE_UNIT'\n"
        "[Unit]\nDescription=BrokeForge metrics sample timer\n\n"
        f"[Timer]\nOnCalendar={calendar(interval)}\n\n"
        "[Install]\nWantedBy=timers.target\n"
        "BROKEFORGE_UNIT\n"
        "systemctl daemon-reload\n"
        f"systemctl enable {UNIT}.timer\n"
        f"systemctl restart {UNIT}.timer\n"
    )


def _remove_steps(facts: HostFacts) -> str:
    steps = ""
    if facts.has_systemd:
        steps += (
            f"systemctl disable --now {UNIT}.timer 2>/dev/null || true\n"
            f"rm -f /etc/systemd/system/{UNIT}.timer "
            f"/etc/systemd/system/{UNIT}.service\n"
            "systemctl daemon-reload\n"
        )
    return steps + (
        f"rm -f {q(CRON_FILE)} {q(COLLECTOR)}\n"
        f"rm -rf {q(SAMPLES.rsplit('/', 1)[0])}\n"
        "echo 'monitoring removed; cron stays installed'\n"
    )


# -- samples -------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    taken_at: datetime
    cpu: float
    memory: float
    disk: float
    load: float


def parse_samples(output: str) -> list[Sample]:
    """The well-formed `sample ...` lines of a verification or collect run.

    The host is not trusted: lines that do not match, percentages above 100
    and times more than a day in the future are dropped.
    """
    samples = []
    latest = datetime.now(UTC) + timedelta(days=1)
    for line in output.splitlines():
        match = _SAMPLE.fullmatch(line.strip())
        if not match:
            continue
        taken_at = datetime.fromtimestamp(int(match[1]), UTC)
        cpu, memory, disk = (float(match[i]) for i in (2, 3, 4))
        if taken_at > latest or max(cpu, memory, disk) > 100:
            continue
        samples.append(Sample(taken_at, cpu, memory, disk, float(match[5])))
    return samples


def store_samples(server: Server, samples: Sequence[Sample]) -> int:
    """Keep the samples BrokeForge has not seen yet; returns how many were new."""
    rows = [
        MetricSample(
            server=server,
            taken_at=s.taken_at,
            cpu=s.cpu,
            memory=s.memory,
            disk=s.disk,
            load=s.load,
        )
        for s in samples
    ]
    before = MetricSample.objects.filter(server=server).count()
    MetricSample.objects.bulk_create(rows, ignore_conflicts=True)
    return MetricSample.objects.filter(server=server).count() - before


def collect(server: Server) -> int:
    """Read the server's sample file over SSH and keep the new samples.

    Raises the executor's `OperationFailure` subclasses when the server
    cannot be reached. Returns the number of new samples.
    """
    from brokeforge.servers.ssh import CommandFailed, SSHSession

    async def read() -> str:
        async with SSHSession(
            server.ssh_target(), connect_timeout=settings.BROKEFORGE_CONNECT_TIMEOUT
        ) as session:
            result = await session.run(
                f"test -r {q(SAMPLES)} || "
                "{ echo 'monitoring is not installed: no sample file' >&2; exit 1; }\n"
                f"tail -n {CHART_SAMPLES} {q(SAMPLES)} | sed 's/^/sample /'\n",
                timeout=30,
            )
            if result.exit_status != 0:
                raise CommandFailed(
                    result.stderr_tail or f"exit status {result.exit_status}"
                )
            return result.output

    new = store_samples(server, parse_samples(asyncio.run(read())))
    logger.info(
        "collected %d new metric samples from %s",
        new,
        server.name,
        extra={"action": "metrics_collected", "server": server.name},
    )
    return new


# -- the chart -----------------------------------------------------------------

CHART_WIDTH = 360
CHART_HEIGHT = 100


@dataclass(frozen=True)
class Chart:
    """Polylines (SVG `points`) of the newest samples on a 0-100 % scale."""

    cpu: str
    memory: str
    disk: str
    latest: MetricSample
    count: int
    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT


def chart(server: Server) -> Chart | None:
    rows = list(
        MetricSample.objects.filter(server=server).order_by("-taken_at")[:CHART_SAMPLES]
    )
    if not rows:
        return None
    rows.reverse()
    step = CHART_WIDTH / max(len(rows) - 1, 1)

    def points(attribute: str) -> str:
        return " ".join(
            f"{i * step:.1f},{CHART_HEIGHT - getattr(r, attribute):.1f}"
            for i, r in enumerate(rows)
        )

    return Chart(
        cpu=points("cpu"),
        memory=points("memory"),
        disk=points("disk"),
        latest=rows[-1],
        count=len(rows),
    )
