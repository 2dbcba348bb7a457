"""Package scripts on a real Debian 12 host: real sshd, real apt, real services.

The host is a debootstrap root filesystem with sshd on a loopback port (see
tests/testhosts). These tests go through the same request/runner path as the
pages and the CLI; only the queue hop is replaced by running the operation
in this process.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from brokeforge.lifecycle.models import Action, OperationState, RecordStatus
from brokeforge.packages import registry
from brokeforge.packages.apt import AptServiceKind
from brokeforge.packages.base import HostFacts, PackageKind
from brokeforge.packages.models import Database
from brokeforge.packages.service import request_action
from brokeforge.servers.models import Server
from brokeforge.servers.service import check_server
from tests.conftest import run_now
from tests.testhosts.debian_host import hold_dpkg_lock
from tests.testhosts.fixtures import DebianTestHost

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.debian_host,
    pytest.mark.timeout(900),
]


@pytest.fixture
def server(make_server: Callable[..., Server], debian_host: DebianTestHost) -> Server:
    key = debian_host.client_key.export_private_key().decode()
    return make_server("deb12", port=debian_host.port, private_key=key)


def act(server: Server, kind: str, action: str, **params: str) -> Database | None:
    operation = run_now(request_action(server, kind, action, params=params or None))
    assert operation.is_finished

    return Database.objects.filter(server=server, kind=kind).first()


def on_host(host: DebianTestHost, command: str) -> str:
    return host.run(command, check=False).stdout.strip()


def is_installed(host: DebianTestHost, package: str) -> bool:
    status = on_host(host, f"dpkg-query -W -f='${{db:Status-Status}}' {package}")
    return status == "installed"


def test_it_waits_for_a_held_dpkg_lock_then_fails_and_retry_installs_redis(
    server: Server, debian_host: DebianTestHost
):
    with hold_dpkg_lock(debian_host.root):
        record = act(server, "redis", "install")

    assert record is not None
    assert record.status == RecordStatus.FAILED
    assert "Could not get lock /var/lib/dpkg/lock-frontend" in record.error_message

    record = act(server, "redis", "retry")

    assert record is not None
    assert record.status == RecordStatus.ACTIVE, record.error_message
    assert re.fullmatch(r"7\.\d+\.\d+", record.version), record.version
    assert on_host(debian_host, "redis-cli ping") == "PONG"
    assert record.operations().count() == 2

    assert act(server, "redis", "remove", data="keep") is None
    assert not is_installed(debian_host, "redis-server")
    assert on_host(debian_host, "ls /var/backups/brokeforge").startswith("redis-")


def test_it_installs_updates_and_removes_mariadb(
    server: Server, debian_host: DebianTestHost
):
    record = act(server, "mariadb", "install")

    assert record is not None
    assert record.status == RecordStatus.ACTIVE, record.error_message
    assert on_host(debian_host, "mariadb -N -e 'SELECT 40 + 2'") == "42"

    record = act(server, "mariadb", "update")
    assert record is not None
    assert record.status == RecordStatus.ACTIVE, record.error_message
    assert "MariaDB" in record.version

    assert act(server, "mariadb", "remove", data="delete") is None
    assert not is_installed(debian_host, "mariadb-server")
    assert on_host(debian_host, "test -e /var/lib/mysql || echo gone") == "gone"


def test_it_fails_mysql_naming_the_repository_it_could_not_reach(
    server: Server, debian_host: DebianTestHost, settings
):
    # Nothing listens on port 9 of the loopback address: the test never
    # reaches outside this machine, and apt meets what an unreachable
    # repository looks like.
    settings.BROKEFORGE_MYSQL_APT_URL = "http://127.0.0.1:9"

    record = act(server, "mysql", "install")

    assert record is not None
    assert record.status == RecordStatus.FAILED
    curl_line, our_line = record.error_message.splitlines()
    assert curl_line.startswith("curl: (7) Failed to connect to 127.0.0.1 port 9")
    assert our_line == (
        "could not reach MySQL repository: downloading "
        "http://127.0.0.1:9/RPM-GPG-KEY-mysql-2023 failed (exit status 1)"
    )
    assert not is_installed(debian_host, "mysql-server")


class MissingPackage(AptServiceKind):
    name = "missing"
    label = "Missing"
    packages = ("brokeforge-no-such-package",)
    purge_packages = packages
    service = "missing"
    data_dir = "/var/lib/missing"
    ping = "false"
    version_command = "true"


class Sleeper(PackageKind):
    """Hangs in a pipeline of two commands, one of them in the background."""

    name = "sleeper"
    label = "Sleeper"
    timeouts = {"install": 3}

    def script(self, action: Action, facts: HostFacts, params: object) -> str:
        return "sleep 31337 &\nsleep 31338 | cat\n"

    def verify_script(
        self,
        action: Action,
        facts: HostFacts,
        params: Mapping[str, Any] | None = None,
    ) -> str:
        return "true\n"


class Marker(PackageKind):
    name = "marker"
    label = "Marker"

    def script(self, action: Action, facts: HostFacts, params: object) -> str:
        return "touch /root/brokeforge-was-here\n"

    def verify_script(
        self,
        action: Action,
        facts: HostFacts,
        params: Mapping[str, Any] | None = None,
    ) -> str:
        return "test -e /root/brokeforge-was-here\n"


@pytest.fixture
def test_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    for kind in (MissingPackage(), Sleeper(), Marker()):
        monkeypatch.setitem(registry.KINDS, kind.name, kind)


def test_it_reports_a_package_the_archive_does_not_have(
    server: Server, test_kinds: None
):
    record = act(server, "missing", "install")

    assert record is not None
    assert record.status == RecordStatus.FAILED
    assert record.error_message == (
        "E: Unable to locate package brokeforge-no-such-package (exit status 100)"
    )


def test_it_times_out_and_leaves_no_remote_process_behind(
    server: Server, debian_host: DebianTestHost, test_kinds: None
):
    record = act(server, "sleeper", "install")

    assert record is not None
    assert record.error_message == "timed out after 3 s"
    leftovers = [
        pid
        for pid in debian_host.pids()
        if "3133" in on_host(debian_host, f"cat /proc/{pid}/cmdline 2>/dev/null")
    ]
    assert leftovers == []


def test_it_refuses_a_changed_host_key_and_runs_nothing(
    server: Server, debian_host: DebianTestHost, test_kinds: None
):
    record = act(server, "marker", "install")
    assert record is not None
    assert record.status == RecordStatus.ACTIVE
    debian_host.run("rm /root/brokeforge-was-here")

    debian_host.new_host_key()
    operation = run_now(request_action(server, "marker", "update"))

    assert operation.state == OperationState.FAILED
    assert operation.reason_class == "host_key_changed"
    assert "nothing was run" in operation.error_message
    assert on_host(debian_host, "test -e /root/brokeforge-was-here || echo absent") == (
        "absent"
    )

    # The way back after a reinstall: pin the new key, then Retry.
    old = server.host_key_fingerprint
    assert check_server(server, repin=True) != old
    record = act(server, "marker", "retry")
    assert record is not None
    assert record.status == RecordStatus.ACTIVE, record.error_message


class SlowEcho(PackageKind):
    name = "slowecho"
    label = "SlowEcho"

    def script(self, action: Action, facts: HostFacts, params: object) -> str:
        return "echo halfway there\nsleep 4\necho done\n"

    def verify_script(
        self,
        action: Action,
        facts: HostFacts,
        params: Mapping[str, Any] | None = None,
    ) -> str:
        return "true\n"


def test_it_streams_output_into_the_operation_while_it_runs(
    server: Server, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setitem(registry.KINDS, "slowecho", SlowEcho())
    operation = request_action(server, "slowecho", "install")
    runner = threading.Thread(target=run_now, args=(operation,))
    runner.start()
    try:
        seen_while_running = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not seen_while_running:
            operation.refresh_from_db()
            if operation.state == OperationState.RUNNING and (
                "halfway there" in operation.output
            ):
                seen_while_running = operation.output
            time.sleep(0.2)
    finally:
        runner.join()

    assert "halfway there" in seen_while_running
    assert "done" not in seen_while_running
    operation.refresh_from_db()
    assert operation.state == OperationState.SUCCEEDED
    assert "done" in operation.output
