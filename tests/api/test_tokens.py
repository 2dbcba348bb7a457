"""Personal tokens: hashed, read-only or read-write, revocable, use recorded."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from brokeforge.accounts.models import ApiToken, AuditEntry
from brokeforge.accounts.tokens import create_token, revoke_token
from brokeforge.servers.models import Server
from tests.api.conftest import ApiClient
from tests.web.helpers import plain_text


def test_it_refuses_a_missing_or_unknown_token_with_401(user: User) -> None:
    for client in (ApiClient(None), ApiClient("bf_not-a-real-token"), ApiClient("x")):
        response = client.get("/servers")

        assert response.status_code == 401
        assert "authentication required" in response.json_body["detail"]


def test_it_stores_only_a_hash_and_records_the_last_use(user: User) -> None:
    token, secret = create_token(user, "ci", read_only=False)

    ApiClient(secret).get("/servers")

    token.refresh_from_db()
    assert secret not in str(list(ApiToken.objects.values()))
    assert token.prefix == secret[:10]
    assert token.last_used_at is not None
    assert token.last_used_from == "127.0.0.1"


def test_a_read_only_token_reads_but_cannot_change(
    api_for: Callable[..., ApiClient], user: User, make_server: Callable[..., Server]
) -> None:
    server = make_server("web-1")
    reader = api_for(user, read_only=True)

    listed = reader.get("/servers")
    writes = [
        reader.post("/servers", {"name": "x", "host": "127.0.0.1"}),
        reader.patch(f"/servers/{server.pk}", {"port": 2}),
        reader.post(f"/servers/{server.pk}/records/redis"),
        reader.post(f"/servers/{server.pk}/check"),
        reader.delete(f"/servers/{server.pk}"),
        reader.post("/operations/1/cancel"),
    ]

    assert listed.status_code == 200
    for response in writes:
        assert response.status_code == 403
        assert "is read-only" in response.json_body["detail"]
    assert list(Server.objects.values_list("name", "port")) == [("web-1", 22)]
    assert not server.databases.exists()


def test_a_revoked_token_is_refused_with_401(user: User) -> None:
    token, secret = create_token(user, "old", read_only=False)
    revoke_token(token)

    response = ApiClient(secret).get("/servers")

    assert response.status_code == 401
    assert response.json_body["detail"] == "token old was revoked"


def test_the_page_shows_a_new_token_once_and_revokes_it(
    signed_in: Client, user: User
) -> None:
    created = signed_in.post(
        reverse("token-list"), {"name": "deploy", "read_only": "on"}
    )
    listed = signed_in.get(reverse("token-list"))

    token = ApiToken.objects.get()
    secret_shown = created.context["secret"]
    assert secret_shown.startswith("bf_") and secret_shown in created.content.decode()
    assert created["Cache-Control"] == "no-store"
    assert secret_shown not in listed.content.decode()
    assert f"deploy {token.prefix}… read-only" in plain_text(listed.content)
    assert ApiClient(secret_shown).get("/servers").status_code == 200

    revoked = signed_in.post(reverse("token-revoke", args=[token.pk]), follow=True)

    assert "Revoked token deploy." in plain_text(revoked.content)
    assert ApiClient(secret_shown).get("/servers").status_code == 401
    actions = list(
        AuditEntry.objects.filter(action__startswith="token.")
        .values_list("action", "via")
        .order_by("id")
    )
    assert actions == [("token.create", "web"), ("token.revoke", "web")]


def test_the_page_refuses_a_duplicate_or_empty_name(
    signed_in: Client, user: User
) -> None:
    create_token(user, "ci", read_only=False)

    duplicate = signed_in.post(reverse("token-list"), {"name": "ci"})
    empty = signed_in.post(reverse("token-list"), {"name": "  "})

    assert "you have a token named 'ci' already" in plain_text(duplicate.content)
    assert "This field is required." in plain_text(empty.content)
    assert ApiToken.objects.count() == 1
