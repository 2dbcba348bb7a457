"""The server list, adding a server, and the connection check."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client
from django.urls import reverse

from brokeforge.lifecycle.models import RecordStatus
from brokeforge.packages.models import Database
from brokeforge.packages.service import request_action
from brokeforge.servers.keys import generate_key_pair
from brokeforge.servers.models import Server
from brokeforge.servers.ssh import AuthenticationRefused
from brokeforge.web import views
from tests.web.helpers import page_text

GOOD = {"name": "web-2", "host": "127.0.0.1", "port": "22", "user": "root"}


def test_it_lists_servers_with_their_status_counts(
    signed_in: Client,
    server: Server,
    make_server: Callable[..., Server],
    make_database: Callable[..., Database],
) -> None:
    other = make_server("db-1", port=2222)
    make_database(server, "redis", RecordStatus.ACTIVE)
    make_database(server, "mariadb", RecordStatus.FAILED)
    make_database(other, "mysql", RecordStatus.INSTALLING)

    response = signed_in.get(reverse("server-list"))

    assert response.status_code == 200
    rows = dict(response.context["servers"])
    assert rows[server] == [("active", 1), ("failed", 1)]
    assert rows[other] == [("installing", 1)]
    text = page_text(response.content)
    assert "root@127.0.0.1:2222" in text
    assert "1 active" in text and "1 failed" in text and "1 installing" in text
    assert reverse("server-detail", args=["db-1"]) in text


def test_it_adds_a_server_and_shows_the_key_to_authorize(signed_in: Client) -> None:
    response = signed_in.post(reverse("server-list"), GOOD, follow=True)

    server = Server.objects.get(name="web-2")
    assert response.redirect_chain == [(reverse("server-detail", args=["web-2"]), 302)]
    text = page_text(response.content)
    assert server.public_key.startswith("ssh-ed25519 ")
    assert server.public_key in text
    assert "~root/.ssh/authorized_keys" in text
    assert "Check connection" in text
    assert "not pinned yet" in text


def test_it_adds_a_server_with_a_pasted_key(signed_in: Client) -> None:
    private, public = generate_key_pair()
    pasted = private.replace("\n", "\r\n")  # as a browser sends a textarea

    response = signed_in.post(
        reverse("server-list"), {**GOOD, "user": "deploy", "private_key": pasted}
    )

    assert response.status_code == 302
    server = Server.objects.get(name="web-2")
    assert server.public_key == public
    assert server.user == "deploy"


@pytest.mark.parametrize(
    ("field", "value", "complaint"),
    [
        ("host", "a;rm -rf /", "is not a valid host"),
        ("host", "", "This field is required."),
        ("port", "70000", "70000 is not a valid port"),
        ("port", "ssh", "Enter a whole number."),
        ("name", "Web 2", "is not a valid server name"),
        ("name", "web-1", "Server with this Name already exists."),
        ("user", "root;id", "is not a valid user name"),
        ("private_key", "not a key", "not a usable private key"),
    ],
)
def test_it_refuses_bad_server_input_and_changes_nothing(
    signed_in: Client, server: Server, field: str, value: str, complaint: str
) -> None:
    response = signed_in.post(reverse("server-list"), {**GOOD, field: value})

    assert response.status_code == 200
    form = response.context["form"]
    assert any(complaint in error for error in form.errors[field])
    assert complaint in page_text(response.content)
    assert list(Server.objects.values_list("name", flat=True)) == ["web-1"]


def test_it_shows_every_field_error_at_once(signed_in: Client, db: None) -> None:
    response = signed_in.post(
        reverse("server-list"),
        {"name": "-bad", "host": "a;rm -rf /", "port": "70000", "user": "root"},
    )

    assert set(response.context["form"].errors) == {"name", "host", "port"}
    assert not Server.objects.exists()


def test_it_shows_the_pinned_fingerprint(signed_in: Client, server: Server) -> None:
    Server.objects.filter(pk=server.pk).update(host_key_fingerprint="SHA256:abc")

    response = signed_in.get(reverse("server-detail", args=[server.name]))

    text = page_text(response.content)
    assert "SHA256:abc" in text
    assert "not pinned yet" not in text


def test_it_404s_for_an_unknown_server(signed_in: Client, db: None) -> None:
    assert signed_in.get(reverse("server-detail", args=["nope"])).status_code == 404


def test_it_checks_the_connection_and_shows_the_fingerprint(
    signed_in: Client, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[Server] = []

    def fake_check(target: Server, **options: object) -> str:
        checked.append(target)
        return "SHA256:pinned-now"

    monkeypatch.setattr(views, "check_server", fake_check)

    response = signed_in.post(reverse("server-check", args=[server.name]), follow=True)

    assert [s.pk for s in checked] == [server.pk]
    assert response.redirect_chain == [
        (reverse("server-detail", args=[server.name]), 302)
    ]
    assert "Connected to web-1; host key SHA256:pinned-now." in page_text(
        response.content
    )


def test_it_shows_why_the_connection_check_failed(
    signed_in: Client, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_check(target: Server, **options: object) -> str:
        raise AuthenticationRefused("root@127.0.0.1:22 refused the key <brokeforge>")

    monkeypatch.setattr(views, "check_server", fake_check)

    response = signed_in.post(reverse("server-check", args=[server.name]), follow=True)

    assert b"refused the key &lt;brokeforge&gt;" in response.content
    assert "Connection check failed" in page_text(response.content)


def test_it_refuses_a_connection_check_by_get(
    signed_in: Client, server: Server
) -> None:
    response = signed_in.get(reverse("server-check", args=[server.name]))

    assert response.status_code == 405


def test_it_treats_an_empty_post_as_missing_fields(signed_in: Client, db: None) -> None:
    response = signed_in.post(reverse("server-list"), {})

    assert set(response.context["form"].errors) == {"name", "host", "port", "user"}
    assert not Server.objects.exists()


def test_it_pins_a_new_host_key_on_request(
    signed_in: Client, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    Server.objects.filter(pk=server.pk).update(host_key_fingerprint="SHA256:old")
    asked: list[bool] = []

    def fake_check(target: Server, *, repin: bool = False, **options: object) -> str:
        asked.append(repin)
        return "SHA256:new"

    monkeypatch.setattr(views, "check_server", fake_check)

    response = signed_in.post(reverse("server-repin", args=[server.name]), follow=True)

    assert asked == [True]
    assert "Pinned web-1's host key SHA256:new (before: SHA256:old)." in page_text(
        response.content
    )
    assert signed_in.get(reverse("server-repin", args=[server.name])).status_code == 405


def test_it_removes_a_server_from_brokeforge(signed_in: Client, server: Server) -> None:
    response = signed_in.post(reverse("server-remove", args=[server.name]), follow=True)

    assert response.redirect_chain == [(reverse("server-list"), 302)]
    assert "Removed web-1 from BrokeForge" in page_text(response.content)
    assert not Server.objects.exists()


def test_it_refuses_to_remove_a_server_with_an_unfinished_operation(
    signed_in: Client, server: Server
) -> None:
    request_action(server, "redis", "install")

    response = signed_in.post(reverse("server-remove", args=[server.name]), follow=True)

    assert "has an unfinished operation" in page_text(response.content)
    assert Server.objects.filter(pk=server.pk).exists()
