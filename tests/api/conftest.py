"""Fixtures for the API tests: accounts, tokens and a JSON client with one."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from brokeforge.accounts.tokens import create_token


class ApiClient:
    """Django's test client speaking JSON with a Bearer token."""

    def __init__(self, secret: str | None) -> None:
        self.client = Client()
        self.headers = {"Authorization": f"Bearer {secret}"} if secret else {}

    def call(self, method: str, path: str, body: Any = None) -> Any:
        kwargs: dict[str, Any] = {"headers": self.headers}
        if method != "get":
            # An absent body is sent as curl sends it: empty, no form encoding.
            kwargs["data"] = json.dumps(body) if body is not None else ""
            kwargs["content_type"] = "application/json"
        response = getattr(self.client, method)(f"/api/v1{path}", **kwargs)
        response.json_body = response.json() if response.content else None
        return response

    def get(self, path: str) -> Any:
        return self.call("get", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("post", path, body)

    def patch(self, path: str, body: Any) -> Any:
        return self.call("patch", path, body)

    def delete(self, path: str) -> Any:
        return self.call("delete", path)


@pytest.fixture
def bob(db: None) -> User:
    return User.objects.create_user("bob", password="another long passphrase 7")


@pytest.fixture
def api_for() -> Callable[..., ApiClient]:
    def make(user: User, *, read_only: bool = False) -> ApiClient:
        _, secret = create_token(user, f"t-{user.pk}-{read_only}", read_only=read_only)
        return ApiClient(secret)

    return make


@pytest.fixture
def api(api_for: Callable[..., ApiClient], user: User) -> ApiClient:
    """Alice's read-write client."""
    return api_for(user)


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
