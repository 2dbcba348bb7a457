"""The operation page and the server's operation history."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from brokeforge.lifecycle.models import Operation, OperationState, RecordStatus
from brokeforge.packages.models import Database
from brokeforge.servers.models import Server
from tests.web.helpers import page_text


def test_it_shows_an_operations_output_and_error(
    signed_in: Client,
    server: Server,
    user: User,
    make_database: Callable[..., Database],
    make_operation: Callable[..., Operation],
) -> None:
    record = make_database(server, "redis", RecordStatus.FAILED, last_action="remove")
    output = "".join(f"line {i}: <apt> & friends\n" for i in range(500))
    operation = make_operation(
        record,
        action="remove",
        params={"data": "keep"},
        attempt=3,
        state=OperationState.FAILED,
        requested_by=user,
        started_at=timezone.now(),
        finished_at=timezone.now(),
        error_message="redis-server is still installed <oops>",
        reason_class="verification_failed",
        output=output,
    )

    response = signed_in.get(reverse("operation-detail", args=[operation.pk]))

    assert response.status_code == 200
    text = page_text(response.content)
    assert output in text
    assert "redis-server is still installed <oops>" in text
    assert b"<oops>" not in response.content
    assert b"<apt>" not in response.content
    for shown in ("Redis on web-1", "remove", "alice", "verification_failed"):
        assert shown in text
    assert "data=keep" in text
    assert response.context["operation"] == operation


def test_it_404s_an_unknown_operation(signed_in: Client, db: None) -> None:
    assert signed_in.get(reverse("operation-detail", args=[999])).status_code == 404


def test_it_lists_the_latest_twenty_operations_on_the_server_page(
    signed_in: Client,
    server: Server,
    make_server: Callable[..., Server],
    make_database: Callable[..., Database],
    make_operation: Callable[..., Operation],
) -> None:
    record = make_database(server, "redis", RecordStatus.ACTIVE)
    operations = [make_operation(record, attempt=i) for i in range(1, 26)]
    elsewhere = make_operation(make_database(make_server("other"), "redis"))

    response = signed_in.get(reverse("server-detail", args=[server.name]))

    listed = list(response.context["operations"])
    assert listed == operations[::-1][:20]
    text = response.content.decode()
    link = reverse("operation-detail", args=[operations[-1].pk])
    assert f'href="{link}"' in text
    assert f'href="{reverse("operation-detail", args=[elsewhere.pk])}"' not in text
    assert f'href="{reverse("operation-detail", args=[operations[0].pk])}"' not in text
