"""First run, signing in and out, and which pages need an account."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

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
