"""Schemathesis against the OpenAPI schema: no 5xx, answers match the schema.

Every server it can create or change is pointed at a closed loopback port
before the request is sent, so a connection check never leaves the machine.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from django.contrib.auth.models import User
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from brokeforge.accounts.tokens import create_token
from brokeforge.api.api import api
from brokeforge.lifecycle.models import Operation, RecordStatus
from brokeforge.packages.models import Database
from brokeforge.servers.models import Server

pytestmark = pytest.mark.timeout(240)

#: Examples per endpoint: enough to vary every field, small enough to take
#: well under two minutes for the whole schema on a busy 2-core machine.
MAX_EXAMPLES = 15


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CLOSED_PORT = _closed_port()
KIND_NAMES = ("redis", "mariadb", "mysql")


schema = schemathesis.openapi.from_dict(api.get_openapi_schema())


@pytest.fixture
def objects(
    user: User,
    make_server: Callable[..., Server],
    make_database: Callable[..., Database],
    make_operation: Callable[..., Operation],
) -> dict[str, Any]:
    """Alice's server with a failed Redis and its operation, and her token."""
    server = make_server("web-1", port=CLOSED_PORT)
    record = make_database(server, "redis", RecordStatus.FAILED, error_message="x")
    operation = make_operation(record, state="failed", output="some output")
    _, secret = create_token(user, "fuzz", read_only=False)
    return {
        "server_id": server.pk,
        "operation_id": operation.pk,
        "headers": {"Authorization": f"Bearer {secret}"},
    }


def aim_at_real_objects(case: Any, objects: dict[str, Any]) -> None:
    """Name existing objects, so most cases reach past the 404 into the code
    that acts (unknown ids and kinds are covered by the endpoint tests)."""
    params = case.path_parameters or {}
    for name in ("server_id", "operation_id"):
        # Every other id stays as generated, to keep probing the edges.
        if isinstance(params.get(name), int) and params[name] % 2 == 0:
            params[name] = objects[name]
    if "kind" in params:
        params["kind"] = KIND_NAMES[len(str(params["kind"])) % len(KIND_NAMES)]


def keep_on_loopback(case: Any) -> None:
    """Point any server the case creates or changes at a closed loopback port."""
    if isinstance(case.body, dict) and case.operation.path.startswith("/servers"):
        if "host" in case.body or case.method.upper() == "POST":
            case.body["host"] = "127.0.0.1"
        case.body["port"] = CLOSED_PORT
    if case.operation.path == "/servers/{server_id}/check" and case.method == "POST":
        # Whatever server it names, it must not be one that points elsewhere.
        assert not Server.objects.exclude(host="127.0.0.1").exists()


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@pytest.mark.django_db(transaction=True)
def test_the_api_never_errors_and_matches_its_schema(
    case: Any, objects: dict[str, Any]
) -> None:
    aim_at_real_objects(case, objects)
    keep_on_loopback(case)

    case.call_and_validate(
        app=get_wsgi_application(),
        headers=objects["headers"],
        checks=[not_a_server_error, response_schema_conformance],
    )
