"""Every value a person gives a firewall rule is checked before anything is
stored or sent to a server: shell tricks, ufw tricks and plain mistakes are
refused with a message, and nothing changes."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from brokeforge.lifecycle.errors import ActionRefused
from brokeforge.lifecycle.models import Action, Operation
from brokeforge.packages import service
from brokeforge.packages.base import HostFacts
from brokeforge.packages.firewall import (
    FirewallRule,
    FirewallRuleKind,
    clean_port,
    clean_source,
    covers,
    ufw_rule_words,
)
from brokeforge.servers.models import Server

BAD_PORTS = [
    "80; rm -rf /",
    "$(id)",
    "`id`",
    "80\n81",
    "../80",
    "'80'",
    '"80"',
    "0",
    "65536",
    "2000:1000",
    "80:80",
    "",
    "-80",
    "1e3",
    "\uff18\uff10",  # fullwidth digits: int() would take them
    "80 81",
]
BAD_SOURCES = [
    "10.0.0.0/24; id",
    "$(id)",
    "10.0.0.1/24",
    "fe80::1%eth0",
    "any\nid",
    "'10.0.0.1'",
    "../etc/passwd",
    "10.0.0.0/33",
    "example.com",
    "10.0.0.0/24\n",
    "to any port 22",
]


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server("fw")


def refused(server: Server, **params: str) -> str:
    with pytest.raises(ActionRefused) as refusal:
        service.create(server, "firewall-rule", params)
    assert not FirewallRule.objects.exists()
    assert not Operation.objects.exists()
    return str(refusal.value)


@pytest.mark.django_db
@pytest.mark.parametrize("port", BAD_PORTS)
def test_it_refuses_a_bad_port(server: Server, port: str) -> None:
    assert "port" in refused(server, port=port)


@pytest.mark.django_db
@pytest.mark.parametrize("source", BAD_SOURCES)
def test_it_refuses_a_bad_source(server: Server, source: str) -> None:
    message = refused(server, port="80", source=source)
    assert "the source must be an address or network" in message


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"port": "80", "protocol": "tcp;id"}, "protocol must be one of tcp, udp"),
        ({"port": "80", "protocol": "icmp"}, "protocol must be one of"),
        ({"port": "80", "policy": "reject"}, "policy must be one of allow, deny"),
        ({"port": "80", "policy": "allow$(id)"}, "policy must be one of"),
        ({"port": "8000:8100", "protocol": "any"}, "a port range needs a protocol"),
        ({"port": "80", "comment": "x"}, "unknown option for a firewall rule"),
    ],
)
def test_it_refuses_bad_choices(
    server: Server, params: dict[str, str], expected: str
) -> None:
    assert expected in refused(server, **params)


@pytest.mark.django_db
def test_a_rule_needs_an_active_firewall(server: Server) -> None:
    message = refused(server, port="80")
    assert message == (
        "Firewall rule needs Firewall (ufw) on fw to be active, and it is not "
        "installed: install it first"
    )


def test_values_are_normalized() -> None:
    assert clean_port(" 8000-8100 ") == "8000:8100"
    assert clean_port(443) == "443"
    assert clean_source("2001:DB8::/32") == "2001:db8::/32"
    assert clean_source("203.0.113.7") == "203.0.113.7/32"
    assert clean_source("ANY") == clean_source(None) == "any"
    rule = {"port": "53", "protocol": "any", "source": "any", "policy": "deny"}
    assert ufw_rule_words(rule) == ["deny", "from", "any", "to", "any", "port", "53"]


def test_covers_the_ssh_port() -> None:
    assert covers("22", "tcp", 22)
    assert covers("20:30", "any", 22)
    assert not covers("20:30", "udp", 22)
    assert not covers("2222", "tcp", 22)


def test_the_script_checks_stored_values_again() -> None:
    facts = HostFacts("debian", "12", "bookworm", "Debian 12", has_systemd=False)
    tampered = {
        "record_id": 7,
        "port": "80; touch /tmp/owned",
        "protocol": "tcp",
        "source": "any",
        "policy": "allow",
    }
    with pytest.raises(ActionRefused, match="port must be a number"):
        FirewallRuleKind().script(Action.INSTALL, facts, tampered)
    good = {**tampered, "port": "80"}
    script = FirewallRuleKind().script(Action.INSTALL, facts, good)
    assert (
        "ufw allow proto tcp from any to any port 80 comment brokeforge-rule-7"
        in script
    )
