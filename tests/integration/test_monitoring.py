"""Monitoring on the real Debian test host (no systemd: the collector runs
from cron), and the samples BrokeForge reads back.

The namespaced test host is used so that the cron daemon started here is
this test's own and dies with the host.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from brokeforge.lifecycle.models import RecordStatus
from brokeforge.packages import service
from brokeforge.packages.models import MetricSample, Monitor
from brokeforge.packages.monitoring import COLLECTOR, CRON_FILE, SAMPLES, collect
from brokeforge.servers.models import Server
from brokeforge.servers.ssh import CommandFailed
from tests.conftest import run_now
from tests.faults.harness import Fleet, wait_for
from tests.testhosts.fixtures import DebianTestHost, NamespacedDebianTestHost

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.debian_host,
    pytest.mark.timeout(900),
]


@pytest.fixture
def server(
    make_server: Callable[..., Server],
    netns_debian_host: NamespacedDebianTestHost,
) -> Iterator[Server]:
    host = netns_debian_host
    key = host.client_key.export_private_key().decode()
    yield make_server("mon", host=host.host, port=host.port, private_key=key)
    host.run(
        f"rm -rf {CRON_FILE} /usr/local/lib/brokeforge /var/lib/brokeforge",
        check=False,
    )


def act(server: Server, action: str, **params: str) -> Monitor | None:
    operation = service.request_action(
        server, "monitoring", action, params=params or None
    )
    assert run_now(operation).is_finished
    return Monitor.objects.filter(server=server).first()


def sample_lines(host: NamespacedDebianTestHost) -> int:
    return len(host.run(f"cat {SAMPLES}").stdout.splitlines())


def test_install_change_interval_collect_and_remove(
    server: Server, netns_debian_host: NamespacedDebianTestHost
) -> None:
    host = netns_debian_host

    # A real failure: a file stands where the collector's directory goes.
    host.run("mkdir -p /usr/local/lib && touch /usr/local/lib/brokeforge")
    record = act(server, "install")
    assert record is not None
    assert record.status == RecordStatus.FAILED
    assert "/usr/local/lib/brokeforge" in record.error_message
    assert "File exists" in record.error_message
    host.run("rm /usr/local/lib/brokeforge")

    record = act(server, "retry")
    assert record is not None
    assert record.status == RecordStatus.ACTIVE, record.error_message
    assert record.interval == 5
    cron = host.run(f"cat {CRON_FILE}").stdout
    assert f"*/5 * * * * root {COLLECTOR} >/dev/null 2>&1" in cron
    pid = host.run("cat /run/crond.pid").stdout.strip()
    assert host.run(f"kill -0 {pid}", check=False).returncode == 0

    # The first sample came back with the operation.
    samples = list(MetricSample.objects.filter(server=server))
    assert len(samples) == 1
    sample = samples[0]
    assert abs(sample.taken_at - datetime.now(UTC)) < timedelta(minutes=5)
    assert 0 <= sample.cpu <= 100 and 0 < sample.memory <= 100
    assert 0 < sample.disk <= 100 and sample.load >= 0

    # Every minute now; cron takes the next sample by itself.
    record = act(server, "update", interval="1")
    assert record is not None
    assert record.status == RecordStatus.ACTIVE, record.error_message
    assert record.interval == 1
    assert record.label() == "Monitoring (every 1 min) on mon"
    assert f"*/1 * * * * root {COLLECTOR}" in host.run(f"cat {CRON_FILE}").stdout
    before = sample_lines(host)
    deadline = time.monotonic() + 90
    while sample_lines(host) == before and time.monotonic() < deadline:
        time.sleep(2)
    assert sample_lines(host) > before, "cron did not run the collector"
    # Let the collector finish its line (it samples over one second).
    time.sleep(2)
    assert collect(server) >= 1
    assert MetricSample.objects.filter(server=server).count() == sample_lines(host)
    assert collect(server) == 0  # nothing new: nothing stored twice

    # A remover that fails leaves the record failed; Retry removes.
    # (a directory stands where the cron file is: rm -f cannot take it)
    host.run(f"rm {CRON_FILE} && mkdir {CRON_FILE}")
    record = act(server, "remove")
    assert record is not None
    assert record.status == RecordStatus.FAILED
    assert f"cannot remove '{CRON_FILE}': Is a directory" in record.error_message
    host.run(f"rmdir {CRON_FILE}")

    assert act(server, "retry") is None
    for path in (COLLECTOR, CRON_FILE, SAMPLES):
        assert host.run(f"test -e {path}", check=False).returncode == 1, path
    with pytest.raises(CommandFailed, match="monitoring is not installed"):
        collect(server)


def test_serve_reads_the_samples_on_its_own_timer(
    transactional_db: None,
    debian_host: DebianTestHost,
    make_server: Callable[..., Server],
    tmp_path: Path,
) -> None:
    """No `metrics collect` by hand: `serve` runs it every
    BROKEFORGE_METRICS_INTERVAL seconds."""
    key = debian_host.client_key.export_private_key().decode()
    server = make_server(
        "timer", host=debian_host.host, port=debian_host.port, private_key=key
    )
    # The state an install leaves (the install itself is tested above).
    Monitor.objects.create(
        server=server, status=RecordStatus.ACTIVE, last_action="install"
    )
    now = int(time.time())
    debian_host.run(
        f"mkdir -p {shlex.quote(SAMPLES.rsplit('/', 1)[0])} && "
        f"printf '%s 12.5 40.0 55.0 0.25\\n%s 13.5 41.0 55.0 0.30\\n' "
        f"{now - 60} {now} > {SAMPLES}"
    )
    fleet = Fleet(tmp_path, BROKEFORGE_METRICS_INTERVAL="1")
    try:
        fleet.serve(workers=1)
        wait_for(
            lambda: MetricSample.objects.filter(server=server).count() == 2,
            60,
            f"serve to collect the samples\n{fleet.log_text()}",
        )
    finally:
        fleet.stop()
        debian_host.run("rm -rf /var/lib/brokeforge", check=False)
    latest = MetricSample.objects.filter(server=server).latest("taken_at")
    assert (latest.cpu, latest.memory, latest.disk) == (13.5, 41.0, 55.0)
