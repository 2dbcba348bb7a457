"""Monitoring's one option, and the samples read from a host, are checked:
a bad interval is refused before anything changes, and a hostile sample file
cannot put anything but numbers into BrokeForge."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from brokeforge.lifecycle.errors import ActionRefused
from brokeforge.lifecycle.models import Action, Operation
from brokeforge.packages import service
from brokeforge.packages.base import HostFacts
from brokeforge.packages.models import Monitor
from brokeforge.packages.monitoring import Monitoring, cron_line, parse_samples
from brokeforge.servers.models import Server

BAD_INTERVALS = ["5; id", "$(id)", "5\n", "\n5", "7", "0", "-1", "61", "5.0", "'5'"]


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server("mon")


@pytest.mark.django_db
@pytest.mark.parametrize("interval", BAD_INTERVALS)
def test_it_refuses_a_bad_interval_and_creates_nothing(
    server: Server, interval: str
) -> None:
    with pytest.raises(ActionRefused, match="the interval is one of 1, 2, 5"):
        service.request_action(
            server, "monitoring", "install", params={"interval": interval}
        )
    assert not Monitor.objects.exists()
    assert not Operation.objects.exists()


def test_options_and_schedules() -> None:
    kind = Monitoring()
    assert kind.clean_params(Action.INSTALL, {}) == {"interval": 5}
    assert kind.clean_params(Action.UPDATE, {"interval": "15"}) == {"interval": 15}
    assert kind.clean_params(Action.UPDATE, {}) == {}
    with pytest.raises(ActionRefused, match="unknown option"):
        kind.clean_params(Action.UPDATE, {"interval": "5", "command": "id"})
    with pytest.raises(ActionRefused, match="unknown option"):
        kind.clean_params(Action.REMOVE, {"interval": "5"})
    assert cron_line(60).startswith("0 * * * * root ")
    assert cron_line(10).startswith("*/10 * * * * root ")


def test_the_script_checks_the_stored_interval_again() -> None:
    facts = HostFacts("debian", "12", "bookworm", "Debian 12", has_systemd=True)
    with pytest.raises(ActionRefused):
        Monitoring().script(Action.UPDATE, facts, {"interval": "5; id"})
    script = Monitoring().script(Action.UPDATE, facts, {"interval": 30})
    assert "OnCalendar=*:0/30" in script
    assert "systemctl enable brokeforge-metrics.timer" in script


def test_only_well_formed_samples_are_read() -> None:
    now = int(datetime.now(UTC).timestamp())
    future = int((datetime.now(UTC) + timedelta(days=3)).timestamp())
    output = "\n".join(
        [
            f"sample {now} 12.5 40.0 55.0 0.42",
            f"sample {now + 60} 101.0 40.0 55.0 0.42",  # over 100 %
            f"sample {future} 1.0 1.0 1.0 0.00",  # from the future
            f"sample {now + 120} 1.0 1.0 1.0 0.00; rm -rf /",
            "sample <script>alert(1)</script>",
            f"{now + 180} 1.0 1.0 1.0 0.00",  # not marked as a sample
            "Status: active",
        ]
    )
    samples = parse_samples(output)
    assert len(samples) == 1
    assert samples[0].cpu == 12.5 and samples[0].load == 0.42
