"""PHP on Ubuntu, which this machine cannot reach: the scripted SSH server
answers as Ubuntu 24.04, and the tests read the script it was sent."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from brokeforge.lifecycle.models import OperationState, RecordStatus
from brokeforge.packages.models import PhpVersion
from brokeforge.packages.service import request_action
from brokeforge.servers.models import Server
from tests.conftest import run_now
from tests.lifecycle.test_runner import DEBIAN_12, FACTS, UBUNTU_2404
from tests.testhosts.fixtures import ScriptedSSHTestServer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server(
    make_server: Callable[..., Server], scripted_ssh: ScriptedSSHTestServer
) -> Server:
    key = scripted_ssh.client_key.export_private_key().decode()
    return make_server("s1", port=scripted_ssh.port, private_key=key)


def php_script(ssh: ScriptedSSHTestServer) -> str:
    return next(c for c in ssh.commands if "-fpm" in c)


def test_it_adds_ondrejs_archive_on_ubuntu_and_sets_the_default_cli(
    server: Server, scripted_ssh: ScriptedSSHTestServer
):
    scripted_ssh.add_rule(FACTS, stdout=UBUNTU_2404)
    scripted_ssh.add_rule("php8.3-fpm", stdout="8.3.14\n")
    scripted_ssh.add_rule(".")
    older = PhpVersion.objects.create(
        server=server,
        version="8.1",
        default_cli=True,
        status="active",
        last_action="install",
    )

    operation = run_now(
        request_action(
            server, "php", "install", params={"version": "8.3", "default_cli": True}
        )
    )

    assert operation.state == OperationState.SUCCEEDED, operation.error_message
    script = php_script(scripted_ssh)
    ppa = script.index("add-apt-repository -y ppa:ondrej/php")
    assert ppa < script.index("bf_apt install php8.3-fpm php8.3-cli php8.3-common")
    assert "update-alternatives --set php /usr/bin/php8.3" in script
    record = PhpVersion.objects.get(version="8.3")
    assert (record.status, record.default_cli) == (RecordStatus.ACTIVE, True)
    older.refresh_from_db()
    assert older.default_cli is False


def test_it_uses_debians_own_archive_on_debian(
    server: Server, scripted_ssh: ScriptedSSHTestServer
):
    scripted_ssh.add_rule(FACTS, stdout=DEBIAN_12)
    scripted_ssh.add_rule(".")

    run_now(request_action(server, "php", "install", params={"version": "8.2"}))

    script = php_script(scripted_ssh)
    assert "add-apt-repository" not in script
    assert "update-alternatives" not in script
