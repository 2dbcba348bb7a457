"""The Debian test host in its own network namespace: reachable, able to
install packages through the mirror proxy, its firewall rules kept inside,
and nothing left behind when it closes or its test run is killed."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import asyncssh
import pytest

from tests.testhosts.debian_host import (
    chroot_run,
    cleanup_stale_hosts,
    netns_exists,
    pids_rooted_at,
)
from tests.testhosts.fixtures import NamespacedDebianTestHost
from tests.testhosts.netns_host import NETWORK_POOL, machine_networks
from tests.testhosts.test_testhosts import run_async, ssh_run

pytestmark = [pytest.mark.debian_host, pytest.mark.timeout(600)]

#: A port no test elsewhere uses, so finding it in a rule set means this test.
MARKER_PORT = "47321"


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def machine_rules(host: NamespacedDebianTestHost) -> str:
    """This machine's own netfilter state, read without changing it.

    The machine has no nft binary of its own, so the host's (nftables
    package) runs here in the machine's network namespace: ``nft list
    ruleset`` only reads.  Legacy iptables tables show in /proc.
    """
    listed = chroot_run(host.root, "nft list ruleset")  # no netns prefix
    legacy = Path("/proc/net/ip_tables_names")
    names = legacy.read_text() if legacy.exists() else ""
    return listed.stdout + "\n--legacy--\n" + names


def test_host_lives_on_its_own_network(
    netns_debian_host: NamespacedDebianTestHost,
) -> None:
    host = netns_debian_host
    address = ipaddress.IPv4Address(host.host)
    assert address in NETWORK_POOL
    assert host.port == 22

    # /proc/net/dev lists the links of the reader's network namespace.
    result = run_async(ssh_run(host, "cat /proc/net/dev"))
    assert result.exit_status == 0, result.stderr
    links = {line.split(":")[0].strip() for line in str(result.stdout).splitlines()}
    assert host.ns_link in links
    assert "eth0" not in links
    assert host.host_link not in links
    # The machine sees its end of the pair, with the gateway address.
    assert link_exists(host.host_link)
    assert not link_exists(host.ns_link)
    assert any(address in network for network in machine_networks())


def test_apt_get_install_works_through_the_mirror_proxy(
    netns_debian_host: NamespacedDebianTestHost,
) -> None:
    host = netns_debian_host
    assert host.proxy is not None
    before = len(host.proxy.log)
    result = run_async(
        ssh_run(
            host,
            "apt-get update -q && apt-get install -y -q nftables "
            "&& dpkg -s nftables | grep '^Status'",
        ),
        timeout=300,
    )
    assert result.exit_status == 0, result.stderr
    assert "Status: install ok installed" in str(result.stdout)
    forwarded = host.proxy.log[before:]
    assert forwarded, "apt did not go through the proxy"
    assert all(
        url.startswith(f"http://{host.proxy.mirror_host}/") and status == 200
        for _, url, status in forwarded
    )


def _ask_proxy(host: NamespacedDebianTestHost, request: str) -> str:
    assert host.proxy is not None
    with socket.create_connection((host.gateway, host.proxy.port), timeout=10) as s:
        s.sendall(request.encode())
        chunks = []
        while chunk := s.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def test_proxy_forwards_only_to_the_mirror(
    netns_debian_host: NamespacedDebianTestHost,
) -> None:
    host = netns_debian_host
    assert host.proxy is not None
    before = len(host.proxy.log)
    other = _ask_proxy(host, "GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert other.startswith("HTTP/1.1 403")
    assert "forwards only to http://deb.debian.org:80/" in other
    wrong_port = _ask_proxy(
        host, f"GET http://{host.proxy.mirror_host}:9/ HTTP/1.1\r\n\r\n"
    )
    assert wrong_port.startswith("HTTP/1.1 403")
    tunnel = _ask_proxy(host, "CONNECT 127.0.0.1:22 HTTP/1.1\r\n\r\n")
    assert tunnel.startswith("HTTP/1.1 405")
    assert [status for _, _, status in host.proxy.log[before:]] == [403, 403, 405]


def test_firewall_rule_inside_does_not_reach_the_machine(
    netns_debian_host: NamespacedDebianTestHost,
) -> None:
    host = netns_debian_host
    host.ensure_packages("nftables", "iptables")
    machine_before = machine_rules(host)
    assert MARKER_PORT not in machine_before

    rule = f"INPUT -p tcp --dport {MARKER_PORT} -j DROP"
    added = run_async(ssh_run(host, f"iptables -A {rule} && iptables -S INPUT"))
    try:
        assert added.exit_status == 0, added.stderr
        assert f"--dport {MARKER_PORT} -j DROP" in str(added.stdout)
        inside = host.run("nft list ruleset").stdout
        assert MARKER_PORT in inside
        assert machine_rules(host) == machine_before
    finally:
        host.run(f"iptables -D {rule}")
    assert MARKER_PORT not in host.run("iptables -S INPUT").stdout


def test_close_removes_namespace_link_proxy_and_root(tmp_path: Path) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    host = NamespacedDebianTestHost(tmp_path / "host", key)
    with host:
        root, netns, link = host.root, host.netns, host.host_link
        assert host.proxy is not None
        proxy_address = (host.gateway, host.proxy.port)
        sleeper = run_async(ssh_run(host, "nohup sleep 1000 >/dev/null 2>&1 & echo $!"))
        assert sleeper.exit_status == 0
        assert netns_exists(netns) and link_exists(link)
    assert not netns_exists(netns)
    assert not link_exists(link)
    assert not root.exists()
    assert pids_rooted_at(root) == []
    with pytest.raises(OSError):
        socket.create_connection(proxy_address, timeout=2).close()


_OWNER = """
import sys, asyncssh
from pathlib import Path
from tests.testhosts.fixtures import NamespacedDebianTestHost
host = NamespacedDebianTestHost(
    Path(sys.argv[1]), asyncssh.generate_private_key("ssh-ed25519")
)
host.start()
print(host.netns, host.host_link, host.root, flush=True)
sys.stdin.read()
"""


def test_stale_namespaced_host_of_a_killed_run_is_cleaned(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_OWNER), str(tmp_path / "host")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    ) as owner:
        try:
            assert owner.stdout is not None
            netns, link, root = owner.stdout.readline().split()
            assert netns_exists(netns) and link_exists(link)
        finally:
            os.kill(owner.pid, signal.SIGKILL)

    cleaned = cleanup_stale_hosts()
    assert Path(root) in cleaned
    assert not netns_exists(netns)
    assert not link_exists(link)
    assert not Path(root).exists()
