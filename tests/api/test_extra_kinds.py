"""Kinds added with the BROKEFORGE_EXTRA_KINDS setting are served like the
built-in ones (tests/settings.py adds the fault-injection probes)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from brokeforge.lifecycle.models import Operation
from brokeforge.servers.models import Server
from tests.api.conftest import ApiClient


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server("web-1")


def test_it_lists_and_installs_a_kind_added_by_the_setting(
    api: ApiClient, server: Server
) -> None:
    names = {kind["name"] for kind in api.get("/kinds").json_body}
    assert {"probe", "probe2"} <= names

    response = api.post(f"/servers/{server.pk}/records/probe", {"params": {}})

    assert response.status_code == 202, response.json_body
    assert Operation.objects.get().kind == "probe"
