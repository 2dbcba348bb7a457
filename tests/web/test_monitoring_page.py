"""The server page's monitoring section: the interval choice on Update and
a small chart of the samples BrokeForge has read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.urls import reverse

from brokeforge.lifecycle.models import RecordStatus
from brokeforge.packages.models import MetricSample, Monitor
from brokeforge.servers.models import Server
from tests.web.helpers import action_url, plain_text

pytestmark = pytest.mark.django_db


def test_it_says_there_are_no_samples_yet(signed_in: Client, server: Server) -> None:
    response = signed_in.get(reverse("server-detail", args=[server.name]))
    text = response.content.decode()
    assert 'id="family-monitoring"' in text
    assert "No samples yet." in plain_text(response.content)
    assert "<svg" not in text


def test_it_charts_the_samples_and_offers_the_interval(
    signed_in: Client, server: Server
) -> None:
    Monitor.objects.create(
        server=server, status=RecordStatus.ACTIVE, last_action="install", interval=5
    )
    start = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    for i, cpu in enumerate((10.0, 50.0, 90.0)):
        MetricSample.objects.create(
            server=server,
            taken_at=start + timedelta(minutes=5 * i),
            cpu=cpu,
            memory=40.0,
            disk=60.0,
            load=0.5,
        )

    response = signed_in.get(reverse("server-detail", args=[server.name]))

    text = response.content.decode()
    assert 'class="metric-cpu"' in text
    assert 'points="0.0,90.0 180.0,50.0 360.0,10.0"' in text
    words = plain_text(response.content)
    assert "Latest of 3 samples (2026-12-04 12:10 UTC): CPU 90.0 %" in words
    assert f'action="{action_url(server, "monitoring", "update")}"' in text
    assert '<select name="interval">' in text


def test_update_from_the_page_carries_the_interval(
    signed_in: Client, server: Server
) -> None:
    monitor = Monitor.objects.create(
        server=server, status=RecordStatus.ACTIVE, last_action="install", interval=5
    )
    response = signed_in.post(
        action_url(server, "monitoring", "update"), {"interval": "7"}, follow=True
    )
    assert (
        "Refused: Minutes between samples: the interval is one of 1, 2, 5, 10, 15, "
        "30, 60 minutes"
    ) in plain_text(response.content)
    assert monitor.current_operation() is None

    signed_in.post(action_url(server, "monitoring", "update"), {"interval": "15"})
    operation = monitor.current_operation()
    assert operation is not None
    assert operation.action == "update"
    assert operation.params == {"interval": 15}
