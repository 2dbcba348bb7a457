"""Families on the server page: a create form per kind with many records,
and the actions of one record among many."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from brokeforge.lifecycle.models import Operation, RecordStatus
from brokeforge.packages.models import Database, SqlDatabase
from brokeforge.servers.models import Server
from tests.web.helpers import action_url, page_text, plain_text

pytestmark = pytest.mark.django_db


def test_it_shows_a_section_per_family_and_a_create_form(
    signed_in: Client, server: Server
):
    response = signed_in.get(reverse("server-detail", args=[server.name]))

    text = response.content.decode()
    assert 'id="family-databases"' in text
    assert f'action="{action_url(server, "database", "install")}"' in text
    assert 'name="password" autocomplete="new-password"' in text
    assert '<option value="postgresql"' in text


def test_it_creates_a_database_from_the_form_and_never_shows_its_password(
    signed_in: Client, server: Server
):
    Database.objects.create(
        server=server, kind="mariadb", status="active", last_action="install"
    )

    response = signed_in.post(
        action_url(server, "database", "install"),
        {
            "engine": "mariadb",
            "name": "shop",
            "user": "shop",
            "password": "pw-Secret-9",
        },
        follow=True,
    )

    record = SqlDatabase.objects.get()
    text = page_text(response.content)
    assert "Create of database shop (user shop) in MariaDB on web-1 requested" in text
    assert f'id="rec-database-{record.pk}"' in response.content.decode()
    assert "pw-Secret-9" not in text
    operation = record.current_operation()
    assert operation is not None
    detail = signed_in.get(reverse("operation-detail", args=[operation.pk]))
    assert "pw-Secret-9" not in detail.content.decode()


def test_it_refuses_a_bad_name_from_the_form_and_creates_nothing(
    signed_in: Client, server: Server
):
    Database.objects.create(
        server=server, kind="mariadb", status="active", last_action="install"
    )

    response = signed_in.post(
        action_url(server, "database", "install"),
        {"engine": "mariadb", "name": "x;$(id)"},
        follow=True,
    )

    assert response.status_code == 400
    form = page_text(response.content).split('id="create-database"')[1]
    assert "database name 'x;$(id)' is not allowed" in form.split("</form>")[0]
    assert 'name="name" value="x;$(id)"' in form
    assert not SqlDatabase.objects.exists()


def test_it_shows_a_missing_answer_next_to_its_field_and_never_echoes_a_secret(
    signed_in: Client, server: Server
):
    response = signed_in.post(
        action_url(server, "database", "install"),
        {"engine": "mariadb", "name": "", "password": "pw-Secret-9"},
    )

    assert response.status_code == 400
    text = page_text(response.content)
    field = text.split('id="field-database-name"')[1].split('<div class="field"')[0]
    assert '<ul class="errorlist"><li>Enter ' in field
    assert "pw-Secret-9" not in text
    assert not SqlDatabase.objects.exists()


def test_it_drops_one_database_among_several(signed_in: Client, server: Server):
    Database.objects.create(
        server=server, kind="mariadb", status="active", last_action="install"
    )
    keep, drop = (
        SqlDatabase.objects.create(
            server=server,
            engine="mariadb",
            name=name,
            status="active",
            last_action="install",
        )
        for name in ("keep", "drop")
    )

    page = signed_in.get(reverse("server-detail", args=[server.name]))
    url = reverse(
        "record-action",
        kwargs={
            "name": server.name,
            "kind": "database",
            "record_id": drop.pk,
            "action": "remove",
        },
    )
    assert f'action="{url}"' in page.content.decode()
    assert ">Drop…</button>" in page.content.decode()
    confirm = signed_in.get(url)
    assert "Drop database drop in MariaDB from web-1?" in plain_text(confirm.content)

    signed_in.post(url, {"confirm": "yes"})

    drop.refresh_from_db()
    keep.refresh_from_db()
    assert (drop.status, keep.status) == (
        RecordStatus.UNINSTALLING,
        RecordStatus.ACTIVE,
    )


def test_it_shows_a_generated_password_only_on_request(
    signed_in: Client, server: Server
):
    Database.objects.create(
        server=server, kind="mariadb", status="active", last_action="install"
    )
    signed_in.post(
        action_url(server, "database", "install"),
        {"engine": "mariadb", "name": "shop", "user": "shop"},
    )
    record = SqlDatabase.objects.get()
    password = record.password()
    assert len(password) == 32

    page = signed_in.get(reverse("server-detail", args=[server.name]))
    assert password not in page.content.decode()
    url = reverse(
        "record-secret",
        kwargs={"name": server.name, "kind": "database", "record_id": record.pk},
    )
    assert f'action="{url}"' in page.content.decode()
    assert signed_in.get(url).status_code == 405

    shown = signed_in.post(url)

    assert password in shown.content.decode()
    assert shown["Cache-Control"] == "no-store"


def _field_block(content: bytes, kind: str, field: str) -> str:
    text = page_text(content)
    return text.split(f'id="field-{kind}-{field}"')[1].split('<div class="field"')[0]


def _form_top(content: bytes, kind: str) -> str:
    form = page_text(content).split(f'id="create-{kind}"')[1]
    return form.split('<div class="field"')[0]


@pytest.mark.parametrize(
    ("kind", "parent", "posted", "field", "words"),
    [
        (
            "cron_task",
            "scheduler",
            {"name": "b", "schedule": "@daily", "user": "root", "command": "a\nb"},
            "command",
            "the command must be one line",
        ),
        (
            "cron_task",
            "scheduler",
            {"name": "b", "schedule": "99 * * * *", "user": "root", "command": "true"},
            "schedule",
            "the minute must be between 0 and 59, not 99",
        ),
        (
            "site",
            "nginx",
            {"domain": "shop.example.com;id"},
            "domain",
            "is not a domain name",
        ),
        (
            "firewall-rule",
            "firewall",
            {"port": "0", "protocol": "tcp", "source": "any", "policy": "allow"},
            "port",
            "ports go from 1 to 65535, not '0'",
        ),
    ],
)
def test_a_refused_option_shows_next_to_its_field_and_creates_nothing(
    signed_in: Client,
    server: Server,
    kind: str,
    parent: str,
    posted: dict[str, str],
    field: str,
    words: str,
):
    Database.objects.create(
        server=server, kind=parent, status="active", last_action="install"
    )

    response = signed_in.post(action_url(server, kind, "install"), posted)

    assert response.status_code == 400
    assert words in _field_block(response.content, kind, field)
    assert words not in _form_top(response.content, kind)
    assert '<ul class="errorlist nonfield">' not in _form_top(response.content, kind)
    assert not Operation.objects.exists()


def test_a_refusal_by_state_stays_on_top_of_the_form(signed_in: Client, server: Server):
    # No cron daemon on the server: the task is refused whatever its options.
    response = signed_in.post(
        action_url(server, "cron_task", "install"),
        {"name": "b", "schedule": "@daily", "user": "root", "command": "true"},
    )

    assert response.status_code == 400
    top = _form_top(response.content, "cron_task")
    assert '<ul class="errorlist nonfield">' in top
    assert "to be active" in top
    assert not Operation.objects.exists()
