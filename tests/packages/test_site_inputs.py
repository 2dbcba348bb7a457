"""Sites, repositories and deployments: dependencies and every value given."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from brokeforge.lifecycle.errors import ActionRefused
from brokeforge.packages.models import Database, PhpVersion, Site, SiteRepository
from brokeforge.packages.service import request_action
from brokeforge.packages.site import SiteKind
from brokeforge.servers.models import Server

pytestmark = pytest.mark.django_db


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    server = make_server("web-1")
    Database.objects.create(
        server=server, kind="nginx", status="active", last_action="install"
    )
    return server


def test_a_php_site_needs_its_php_version(server: Server):
    with pytest.raises(ActionRefused) as refused:
        request_action(
            server,
            "site",
            "provision",
            params={"domain": "shop.test", "php_version": "8.2"},
        )

    assert str(refused.value) == (
        "Site needs PHP 8.2 on web-1 to be active, and it is not installed: "
        "install it first"
    )
    PhpVersion.objects.create(
        server=server, version="8.2", status="active", last_action="install"
    )
    operation = request_action(
        server,
        "site",
        "provision",
        params={
            "domain": "Shop.Test.",
            "aliases": "www.shop.test, shop.test",
            "php_version": "8.2",
        },
    )
    assert operation.params == {
        "domain": "shop.test",
        "aliases": "www.shop.test",
        "web_root": "/var/www/shop.test",
        "php_version": "8.2",
    }


@pytest.mark.parametrize(
    ("params", "complaint"),
    [
        ({"domain": "shop;id.test"}, "domain 'shop;id.test' is not a domain name"),
        ({"domain": "$(id).test"}, "is not a domain name"),
        ({"domain": "a\nb.test"}, "is not a domain name"),
        ({"domain": "../x.test"}, "is not a domain name"),
        ({"domain": "localhost"}, "is not a domain name"),
        ({"domain": "a.test", "aliases": "b.test c'd.test"}, 'alias "c\'d.test"'),
        ({"domain": "a.test", "web_root": "/var/www/../../etc"}, "is not allowed"),
        ({"domain": "a.test", "web_root": "/etc/nginx"}, "inside /var/www or /srv"),
        ({"domain": "a.test", "web_root": "/var/www"}, "inside /var/www or /srv"),
        ({"domain": "a.test", "web_root": "/srv/a b"}, "is not allowed"),
        ({"domain": "a.test", "php_version": "8.2;id"}, "is not valid"),
        ({"domain": "a.test", "root": "/"}, "unknown option: root"),
    ],
)
def test_it_refuses_bad_site_options(
    server: Server, params: dict[str, str], complaint: str
):
    with pytest.raises(ActionRefused, match=re.escape(complaint)):
        request_action(server, "site", "provision", params=params)

    assert not Site.objects.exists()


def test_a_server_block_names_the_site_and_hides_dot_files():
    text = SiteKind().server_block(
        {
            "domain": "a.test",
            "aliases": "www.a.test",
            "web_root": "/srv/a",
            "php_version": "8.2",
        }
    )

    assert "    server_name a.test www.a.test;\n" in text
    assert "    root /srv/a;\n" in text
    assert "fastcgi_pass unix:/run/php/brokeforge-a.test.sock;" in text
    assert "location ~ /\\.(?!well-known) {\n        deny all;" in text


@pytest.fixture
def site(server: Server) -> Site:
    return Site.objects.create(
        server=server,
        domain="a.test",
        web_root="/var/www/a.test",
        status="active",
        last_action="install",
    )


@pytest.mark.parametrize(
    ("params", "complaint"),
    [
        ({"url": "--upload-pack=touch /tmp/x"}, "is not allowed"),
        ({"url": "ext::sh -c touch% /tmp/x"}, "is not allowed"),
        ({"url": "https://host/x.git; id"}, "is not allowed"),
        ({"url": "https://host/$(id).git"}, "is not allowed"),
        ({"url": "https://host/x.git\nid"}, "is not allowed"),
        ({"url": "fd::3"}, "is not allowed"),
        ({"url": "/srv/x.git", "branch": "-f"}, "branch '-f' is not a valid"),
        ({"url": "/srv/x.git", "branch": "a..b"}, "is not a valid"),
        ({"url": "/srv/x.git", "branch": "main;id"}, "is not a valid"),
        ({"url": "/srv/x.git", "branch": "main\nid"}, "is not a valid"),
    ],
)
def test_it_refuses_bad_repository_options(
    site: Site, params: dict[str, str], complaint: str
):
    with pytest.raises(ActionRefused, match=re.escape(complaint)):
        request_action(
            site.server, "site_git", "add", params={"domain": "a.test", **params}
        )

    assert not SiteRepository.objects.exists()


def test_a_repository_gets_its_own_deploy_key_kept_out_of_the_params(site: Site):
    operation = request_action(
        site.server,
        "site_git",
        "add",
        params={"domain": "a.test", "url": "git@github.com:me/shop.git"},
    )

    repo = SiteRepository.objects.get()
    assert repo.deploy_public_key.startswith("ssh-ed25519 ")
    assert repo.deploy_public_key.endswith(" brokeforge-a.test")
    assert "PRIVATE KEY" in repo.deploy_key()
    assert "PRIVATE" not in repo.deploy_key_encrypted
    assert "PRIVATE" not in str(operation.params)
    assert operation.params["branch"] == "main"


def test_a_deployment_needs_the_repository_and_never_blocks_its_removal(site: Site):
    with pytest.raises(ActionRefused, match="needs Git repository on web-1"):
        request_action(site.server, "deployment", "deploy", params={"domain": "a.test"})
    repo = SiteRepository.objects.create(
        server=site.server,
        domain="a.test",
        url="/srv/x.git",
        deploy_key_encrypted="x",
        deploy_public_key="y",
        status="active",
        last_action="install",
    )
    operation = request_action(
        site.server, "deployment", "deploy", params={"domain": "a.test"}
    )
    with pytest.raises(ActionRefused, match="cannot be removed while deployment"):
        request_action(site.server, "site_git", "remove", record_id=repo.pk)
    from brokeforge.packages.models import Deployment

    Deployment.objects.filter(pk=operation.record_id).update(status="active")
    with pytest.raises(ActionRefused, match="cannot be removed while repository"):
        request_action(
            site.server,
            "site",
            "remove",
            record_id=site.pk,
            params={"files": "keep"},
        )
    request_action(site.server, "site_git", "remove", record_id=repo.pk)
