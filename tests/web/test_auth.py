"""First run, signing in and out, and which pages need an account."""

from __future__ import annotations

from ipaddress import ip_network

import pytest
from django.contrib.auth.models import User
from django.test import Client, RequestFactory
from django.urls import reverse

from brokeforge.accounts.actor import client_address
from brokeforge.accounts.models import AuditEntry
from brokeforge.servers.models import Server
from tests.web.helpers import PASSWORD

GOOD_PASSWORD = "correct horse battery staple 7"


def test_it_sends_every_page_to_setup_while_no_account_exists(
    client: Client, db: None
) -> None:
    for url in ("/", "/login/", "/servers/web-1/", "/operations/1/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"] == reverse("first-run")

    response = client.get(reverse("first-run"))
    assert response.status_code == 200
    assert b"Create account" in response.content


def test_it_creates_the_first_account_and_signs_it_in(client: Client, db: None) -> None:
    response = client.post(
        reverse("first-run"),
        {"username": "alice", "password1": GOOD_PASSWORD, "password2": GOOD_PASSWORD},
        follow=True,
    )

    assert response.redirect_chain[0] == (reverse("server-list"), 302)
    assert response.context["user"].username == "alice"
    account = User.objects.get()
    assert account.username == "alice"
    assert account.check_password(GOOD_PASSWORD)
    assert account.is_superuser


@pytest.mark.parametrize(
    ("password1", "password2", "complaint"),
    [
        ("short", "short", "This password is too short."),
        ("password123", "password123", "This password is too common."),
        (GOOD_PASSWORD, GOOD_PASSWORD + "x", "The two password fields didn"),
    ],
)
def test_it_applies_the_password_validators_on_first_run(
    client: Client, db: None, password1: str, password2: str, complaint: str
) -> None:
    response = client.post(
        reverse("first-run"),
        {"username": "alice", "password1": password1, "password2": password2},
    )

    assert response.status_code == 200
    assert complaint in response.content.decode().replace("&#x27;", "'")
    assert not User.objects.exists()


def test_it_closes_first_run_once_an_account_exists(client: Client, user: User) -> None:
    assert client.get(reverse("first-run"))["Location"] == reverse("login")

    response = client.post(
        reverse("first-run"),
        {"username": "mallory", "password1": GOOD_PASSWORD, "password2": GOOD_PASSWORD},
    )

    assert response.status_code == 302
    assert list(User.objects.values_list("username", flat=True)) == ["alice"]
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/"),
        ("post", "/"),
        ("get", "/servers/web-1/"),
        ("post", "/servers/web-1/check/"),
        ("post", "/servers/web-1/redis/install/"),
        ("get", "/operations/1/"),
    ],
)
def test_it_requires_login(
    client: Client, user: User, server: Server, method: str, url: str
) -> None:
    if method == "post":
        response = client.post(url, {"name": "web-2", "host": "127.0.0.1"})
    else:
        response = client.get(url)

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={url}"
    assert Server.objects.count() == 1


def test_it_signs_in_and_out(client: Client, user: User) -> None:
    page = client.get(reverse("login"))
    assert page.status_code == 200

    bad = client.post(reverse("login"), {"username": "alice", "password": "nope"})
    assert bad.status_code == 200
    assert "_auth_user_id" not in client.session

    response = client.post(
        reverse("login"), {"username": "alice", "password": PASSWORD, "next": "/"}
    )
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/").status_code == 200

    assert client.get(reverse("logout")).status_code == 405
    response = client.post(reverse("logout"))
    assert response["Location"] == reverse("login")
    assert client.get("/").status_code == 302


def test_sign_ins_sign_outs_and_refusals_are_in_the_audit_log(
    client: Client, user: User
) -> None:
    client.post(reverse("login"), {"username": "alice", "password": "nope"})
    client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    client.post(reverse("logout"))

    entries = list(
        AuditEntry.objects.order_by("pk").values_list(
            "action", "username", "outcome", "address"
        )
    )
    assert entries == [
        ("account.sign_in", "alice", "refused", "127.0.0.1"),
        ("account.sign_in", "alice", "done", "127.0.0.1"),
        ("account.sign_out", "alice", "done", "127.0.0.1"),
    ]
    # The refused password is nowhere in the log.
    assert not AuditEntry.objects.filter(detail__contains="nope").exists()


def test_the_first_account_is_in_the_audit_log(client: Client, db: None) -> None:
    client.post(
        reverse("first-run"),
        {"username": "alice", "password1": GOOD_PASSWORD, "password2": GOOD_PASSWORD},
    )
    created = AuditEntry.objects.get(action="account.create")
    assert (created.username, created.via, created.target) == ("alice", "web", "alice")


@pytest.mark.parametrize(
    ("trusted", "remote", "forwarded", "seen"),
    [
        # No trusted proxy: the header is anyone's to forge, and ignored.
        ("", "10.0.0.5", "203.0.113.7", "10.0.0.5"),
        # From the trusted proxy: the client it names.
        ("10.0.0.5", "10.0.0.5", "203.0.113.7", "203.0.113.7"),
        # A client's own forged entry sits left of what the proxy appended.
        ("10.0.0.0/24", "10.0.0.5", "198.51.100.1, 203.0.113.7", "203.0.113.7"),
        # Through two trusted proxies.
        ("10.0.0.0/24", "10.0.0.5", "203.0.113.7, 10.0.0.9", "203.0.113.7"),
        # Not from a trusted proxy: the header is ignored.
        ("10.0.0.5", "192.0.2.1", "203.0.113.7", "192.0.2.1"),
        # Garbage in the header: the proxy's own address stands.
        ("10.0.0.5", "10.0.0.5", "'; DROP", "10.0.0.5"),
    ],
)
def test_the_client_address_is_read_through_trusted_proxies_only(
    settings, trusted: str, remote: str, forwarded: str, seen: str
) -> None:
    settings.BROKEFORGE_TRUSTED_PROXIES = [
        ip_network(part, strict=False) for part in trusted.split(",") if part
    ]
    request = RequestFactory().get(
        "/", REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded
    )
    assert client_address(request) == seen
