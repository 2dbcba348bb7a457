"""/api/v1/operations and /api/v1/audit."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from brokeforge.lifecycle.models import Operation
from brokeforge.servers.models import Server
from tests.api.conftest import ApiClient


@pytest.fixture
def operation(api: ApiClient, make_server: Callable[..., Server]) -> Operation:
    server = make_server("web-1")
    api.post(f"/servers/{server.pk}/records/redis")
    return Operation.objects.get()


def test_it_lists_and_gets_operations(api: ApiClient, operation: Operation) -> None:
    listed = api.get("/operations")
    by_server = api.get(f"/operations?server_id={operation.server_id}")
    other_server = api.get(f"/operations?server_id={operation.server_id + 1}")
    got = api.get(f"/operations/{operation.pk}")

    assert [op["id"] for op in listed.json_body] == [operation.pk]
    assert [op["id"] for op in by_server.json_body] == [operation.pk]
    assert other_server.json_body == []
    assert got.status_code == 200
    assert (got.json_body["record"], got.json_body["requested_by"]) == (
        "Redis on web-1",
        "alice",
    )


def test_it_404s_an_unknown_operation(api: ApiClient, operation: Operation) -> None:
    response = api.get(f"/operations/{operation.pk + 1}/output")

    assert response.status_code == 404
    assert response.json_body["detail"] == f"no operation {operation.pk + 1}"


def test_it_gives_the_output_from_an_offset(
    api: ApiClient, operation: Operation
) -> None:
    Operation.objects.filter(pk=operation.pk).update(output="abcdef")

    whole = api.get(f"/operations/{operation.pk}/output")
    tail = api.get(f"/operations/{operation.pk}/output?offset=4")
    past = api.get(f"/operations/{operation.pk}/output?offset=99")
    negative = api.get(f"/operations/{operation.pk}/output?offset=-1")

    assert (whole.json_body["text"], whole.json_body["next_offset"]) == ("abcdef", 6)
    assert (tail.json_body["text"], tail.json_body["offset"]) == ("ef", 4)
    assert (past.json_body["text"], past.json_body["next_offset"]) == ("", 6)
    assert negative.status_code == 400
    assert negative.json_body["errors"][0]["field"] == "offset"


def test_it_says_how_much_output_was_not_kept(
    api: ApiClient, operation: Operation
) -> None:
    # Only the tail of a long output is stored: characters 0-99 are gone.
    Operation.objects.filter(pk=operation.pk).update(output="xyz", output_dropped=100)

    response = api.get(f"/operations/{operation.pk}/output?offset=10")

    body = response.json_body
    assert (body["offset"], body["skipped"], body["text"]) == (100, 90, "xyz")
    assert body["next_offset"] == 103


def test_it_lists_the_audit_log_newest_first(
    api: ApiClient, operation: Operation
) -> None:
    api.post(f"/servers/{operation.server_id}/records/redis/update")

    response = api.get("/audit")

    assert response.status_code == 200
    rows = [(e["action"], e["outcome"], e["via"]) for e in response.json_body]
    assert rows == [
        ("record.update", "refused", "api"),
        ("record.install", "done", "api"),
    ]
    assert response.json_body[1]["operation_id"] == operation.pk
    assert response.json_body[1]["token"] is not None


def test_it_cancels_a_queued_operation_and_refuses_a_second_cancel(
    api: ApiClient, operation: Operation
) -> None:
    cancelled = api.post(f"/operations/{operation.pk}/cancel")
    again = api.post(f"/operations/{operation.pk}/cancel")
    record = api.get(f"/servers/{operation.server_id}/records/redis")

    assert cancelled.status_code == 202
    assert cancelled.json_body["state"] == "cancelled"
    assert (
        "cancelled by alice before it started" in (cancelled.json_body["error_message"])
    )
    assert again.status_code == 409
    assert "has already ended (cancelled)" in again.json_body["detail"]
    assert record.json_body["status"] == "failed"
    assert record.json_body["allowed_actions"] == ["retry", "remove"]


def test_it_says_what_a_queued_operation_waits_for(
    api: ApiClient, operation: Operation
) -> None:
    response = api.get(f"/operations/{operation.pk}")

    assert response.json_body["waiting"] == (
        "waiting for a worker — none is running (start `brokeforge serve`)"
    )
