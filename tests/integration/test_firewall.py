"""The firewall (ufw) and its rules, for real, on the Debian test host that
lives in its own network namespace: no rule here ever reaches this machine.

The operations go through the same request/runner path as the pages and the
CLI; only the queue hop is replaced by running them in this process.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator

import pytest

from brokeforge.lifecycle.errors import ActionRefused
from brokeforge.lifecycle.models import Action, Operation, RecordStatus
from brokeforge.packages import service
from brokeforge.packages.firewall import FirewallRule
from brokeforge.packages.models import Database
from brokeforge.servers.models import Server
from brokeforge.servers.service import check_server
from tests.conftest import run_now
from tests.testhosts.debian_host import hold_dpkg_lock
from tests.testhosts.fixtures import NamespacedDebianTestHost

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.debian_host,
    pytest.mark.timeout(900),
]

#: A second sshd inside the namespace: something for rules to open and close.
PROBE_PORT = 2222
USER_RULES_ERROR = "Couldn't stat '/etc/ufw/user.rules'"


@pytest.fixture
def server(
    make_server: Callable[..., Server],
    netns_debian_host: NamespacedDebianTestHost,
) -> Iterator[Server]:
    host = netns_debian_host
    key = host.client_key.export_private_key().decode()
    yield make_server("fw", host=host.host, port=host.port, private_key=key)
    # Leave the shared host as the next test expects it: no ufw, no probe.
    host.run(
        "if command -v ufw >/dev/null; then ufw --force disable; fi; "
        "apt-get purge -y -q ufw >/dev/null 2>&1 || true; "
        "if [ -f /run/probe.pid ]; then kill $(cat /run/probe.pid) || true; fi",
        check=False,
    )


def firewall(server: Server) -> Database | None:
    return Database.objects.filter(server=server, kind="firewall").first()


def act(server: Server, kind: str, action: str, **params: str) -> Operation:
    record_id = params.pop("record_id", None)
    operation = service.request_action(
        server,
        kind,
        action,
        params=params or None,
        record_id=int(record_id) if record_id else None,
    )
    operation = run_now(operation)
    assert operation.is_finished
    return operation


def add_rule(server: Server, **params: str) -> FirewallRule:
    operation = act(server, "firewall-rule", "add", **params)
    return FirewallRule.objects.get(pk=operation.record_id)


def ufw_status(host: NamespacedDebianTestHost) -> str:
    return host.run("ufw status verbose", check=False).stdout


def start_probe(host: NamespacedDebianTestHost) -> None:
    host.run(
        f"/usr/sbin/sshd -p {PROBE_PORT} -o ListenAddress={host.host} "
        "-o PidFile=/run/probe.pid"
    )


def probe_answers(host: NamespacedDebianTestHost) -> bool:
    """Whether the probe's banner comes back (ufw drops: no answer at all)."""
    try:
        with socket.create_connection((host.host, PROBE_PORT), timeout=3) as sock:
            return sock.recv(8).startswith(b"SSH-")
    except OSError:
        return False


@contextlib.contextmanager
def ufw_rules_file_missing(host: NamespacedDebianTestHost) -> Iterator[None]:
    """A real ufw failure: its rules file is gone (until the block ends)."""
    host.run("mv /etc/ufw/user.rules /etc/ufw/user.rules.away")
    try:
        yield
    finally:
        host.run("mv /etc/ufw/user.rules.away /etc/ufw/user.rules")


def test_install_denies_incoming_keeps_ssh_open_and_rules_open_ports(
    server: Server, netns_debian_host: NamespacedDebianTestHost
) -> None:
    host = netns_debian_host
    start_probe(host)
    assert probe_answers(host)

    operation = act(server, "firewall", "install")
    record = firewall(server)
    assert record is not None
    assert record.status == RecordStatus.ACTIVE, record.error_message
    assert record.version.startswith("0.3"), record.version
    status = ufw_status(host)
    assert "Status: active" in status
    assert "Default: deny (incoming), allow (outgoing)" in status
    assert "22/tcp                     ALLOW IN    Anywhere" in status
    assert "# BrokeForge SSH" in status
    assert "Default: deny (incoming)" in operation.output

    # Incoming is denied: the probe is dropped. BrokeForge still gets in.
    assert not probe_answers(host)
    check_server(server)

    rule = add_rule(server, port=str(PROBE_PORT), source=f"{host.gateway}/32")
    assert rule.status == RecordStatus.ACTIVE, rule.error_message
    assert rule.label() == f"rule allow {PROBE_PORT}/tcp from {host.gateway}/32 on fw"
    assert f"# brokeforge-rule-{rule.pk}" in ufw_status(host)
    assert probe_answers(host)

    act(server, "firewall-rule", "remove", record_id=str(rule.pk))
    assert not FirewallRule.objects.filter(pk=rule.pk).exists()
    assert f"brokeforge-rule-{rule.pk}" not in ufw_status(host)
    assert not probe_answers(host)

    host.ensure_packages("nftables")
    act(server, "firewall", "remove")
    assert firewall(server) is None
    assert host.run(
        "dpkg-query -W -f='${db:Status-Status}' ufw", check=False
    ).stdout in (
        "",
        "not-installed",
        "config-files",
    )
    assert "ufw" not in host.run("nft list ruleset").stdout
    assert probe_answers(host)


def test_install_fails_on_a_held_lock_and_retry_installs(
    server: Server, netns_debian_host: NamespacedDebianTestHost
) -> None:
    host = netns_debian_host
    with hold_dpkg_lock(host.root):
        act(server, "firewall", "install")
    record = firewall(server)
    assert record is not None
    assert record.status == RecordStatus.FAILED
    assert "Could not get lock /var/lib/dpkg/lock-frontend" in record.error_message
    assert "Status: active" not in ufw_status(host)

    act(server, "firewall", "retry")
    record = firewall(server)
    assert record is not None
    assert record.status == RecordStatus.ACTIVE, record.error_message
    assert "Status: active" in ufw_status(host)

    # A remover that fails leaves the record failed, and Retry removes.
    with hold_dpkg_lock(host.root):
        act(server, "firewall", "remove")
    record = firewall(server)
    assert record is not None
    assert record.status == RecordStatus.FAILED
    assert "Could not get lock" in record.error_message
    act(server, "firewall", "retry")
    assert firewall(server) is None


def test_rule_fails_with_the_hosts_message_and_retry_adds_it(
    server: Server, netns_debian_host: NamespacedDebianTestHost
) -> None:
    host = netns_debian_host
    act(server, "firewall", "install")

    with ufw_rules_file_missing(host):
        rule = add_rule(server, port="8000:8100", protocol="udp", source="10.9.0.0/16")
    assert rule.status == RecordStatus.FAILED
    assert USER_RULES_ERROR in rule.error_message

    act(server, "firewall-rule", "retry", record_id=str(rule.pk))
    rule.refresh_from_db()
    assert rule.status == RecordStatus.ACTIVE, rule.error_message
    line = next(
        line for line in ufw_status(host).splitlines() if f"rule-{rule.pk}" in line
    )
    assert line.split()[:4] == ["8000:8100/udp", "ALLOW", "IN", "10.9.0.0/16"]

    # The firewall cannot go while a rule depends on it.
    with pytest.raises(ActionRefused, match="depend on it: remove those first"):
        service.request_action(server, "firewall", "remove")

    with ufw_rules_file_missing(host):
        act(server, "firewall-rule", "remove", record_id=str(rule.pk))
    rule.refresh_from_db()
    assert rule.status == RecordStatus.FAILED
    assert rule.last_action == Action.REMOVE
    assert USER_RULES_ERROR in rule.error_message
    assert f"rule-{rule.pk}" in ufw_status(host)

    act(server, "firewall-rule", "retry", record_id=str(rule.pk))
    assert not FirewallRule.objects.filter(pk=rule.pk).exists()
    assert f"rule-{rule.pk}" not in ufw_status(host)


def test_ipv6_deny_rule_for_any_protocol(
    server: Server, netns_debian_host: NamespacedDebianTestHost
) -> None:
    act(server, "firewall", "install")
    rule = add_rule(
        server, port="53", protocol="any", source="2001:DB8::/32", policy="deny"
    )
    assert rule.status == RecordStatus.ACTIVE, rule.error_message
    assert rule.source == "2001:db8::/32"
    line = next(
        line
        for line in ufw_status(netns_debian_host).splitlines()
        if f"rule-{rule.pk}" in line
    )
    assert line.split()[:4] == ["53", "DENY", "IN", "2001:db8::/32"]

    # ufw keeps one rule per port, protocol and source, and so does BrokeForge.
    with pytest.raises(ActionRefused, match="exists already"):
        service.create(
            server,
            "firewall-rule",
            {"port": "53", "protocol": "any", "source": "2001:db8::/32"},
        )
    # Denying BrokeForge's own SSH port is refused before anything runs.
    with pytest.raises(ActionRefused, match="would cut BrokeForge off from fw"):
        service.create(server, "firewall-rule", {"port": "20:30", "policy": "deny"})
    assert FirewallRule.objects.filter(server=server).count() == 1
