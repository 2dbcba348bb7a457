"""A Debian test host in its own network namespace, for firewall tests.

The plain :class:`DebianHost` shares the machine's network stack, so a
``ufw`` or ``iptables`` command run in it would change the machine's own
rules.  :class:`NamespacedDebianHost` runs the same chroot in a network
namespace the test creates:

- ``ip netns add bfNNNN`` plus a veth pair; the machine's end gets the first
  address of a free ``/30`` of ``10.231.0.0/16``, the namespace's end the
  second (checked against every address and route of the machine, and
  allocated under a file lock so concurrent test runs never share one);
- sshd listens on port 22 of the namespace's address; every local command
  (:meth:`run`) goes through ``ip netns exec NS chroot ROOT``;
- the namespace has no route out.  apt reaches the Debian mirror through a
  :class:`MirrorProxy` on the machine's veth address that forwards to that
  mirror only (``Acquire::http::Proxy`` in the chroot).  Nothing touches the
  machine's iptables or nftables.

``close`` kills the host's processes, deletes the namespace (which destroys
both veth ends) and stops the proxy; a killed test run's namespace is
removed by the stale-host cleanup, which reads the names from the registry.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.testhosts.debian_host import (
    DebianHost,
    DebianHostError,
    _file_lock,
    debian_mirror,
    remove_link,
    remove_netns,
)
from tests.testhosts.mirror_proxy import MirrorProxy

#: Where namespaced hosts take their /30 networks from.
NETWORK_POOL = ipaddress.IPv4Network("10.231.0.0/16")
SSH_PORT = 22
APT_PROXY_CONF = "etc/apt/apt.conf.d/00brokeforge-test-proxy"


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise DebianHostError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")


def machine_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the machine has an address in or a route to."""
    networks: list[ipaddress.IPv4Network] = []
    addresses = json.loads(
        subprocess.run(
            ["ip", "-j", "-4", "addr", "show"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    for link in addresses:
        for info in link.get("addr_info", []):
            networks.append(
                ipaddress.IPv4Network(
                    f"{info['local']}/{info['prefixlen']}", strict=False
                )
            )
    routes = json.loads(
        subprocess.run(
            ["ip", "-j", "-4", "route", "show", "table", "all"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    for route in routes:
        destination = route.get("dst", "")
        if destination and destination != "default":
            networks.append(ipaddress.IPv4Network(destination, strict=False))
    return networks


def free_subnets(
    used: list[ipaddress.IPv4Network],
) -> Iterator[ipaddress.IPv4Network]:
    """The /30 networks of :data:`NETWORK_POOL` that overlap nothing in ``used``."""
    for candidate in NETWORK_POOL.subnets(new_prefix=30):
        if not any(candidate.overlaps(network) for network in used):
            yield candidate


class NamespacedDebianHost(DebianHost):
    """A :class:`DebianHost` whose sshd and processes live in their own netns.

    ``host`` is the namespace's address (``10.231.x.y``) and ``port`` is 22.
    ``proxy`` is the mirror proxy apt inside uses.
    """

    def __init__(
        self,
        workdir: Path,
        authorized_key: str,
        *,
        cache: Path | None = None,
        mirror: str | None = None,
    ) -> None:
        super().__init__(workdir, authorized_key, cache=cache)
        suffix = secrets.token_hex(4)
        #: Network namespace name; veth names are at most 15 characters.
        self.netns = f"bf{suffix}"
        self.host_link = f"bfh{suffix}"
        self.ns_link = f"bfn{suffix}"
        self.host = ""
        self.gateway = ""
        self.mirror = mirror or debian_mirror()
        self.proxy: MirrorProxy | None = None

    def _registry_extra(self) -> dict[str, str]:
        return {"netns": self.netns, "link": self.host_link}

    def _prepare_network(self) -> None:
        with _file_lock(self._cache / "netns.lock"):
            subnet = next(free_subnets(machine_networks()), None)
            if subnet is None:
                raise DebianHostError(f"no free /30 left in {NETWORK_POOL}")
            gateway, address = (str(ip) for ip in subnet.hosts())
            _ip("netns", "add", self.netns)
            _ip(
                "link", "add", self.host_link, "type", "veth",
                "peer", "name", self.ns_link,
            )  # fmt: skip
            _ip("link", "set", self.ns_link, "netns", self.netns)
            _ip("addr", "add", f"{gateway}/30", "dev", self.host_link)
            _ip("link", "set", self.host_link, "up")
        inside = ("-n", self.netns)
        _ip(*inside, "addr", "add", f"{address}/30", "dev", self.ns_link)
        _ip(*inside, "link", "set", self.ns_link, "up")
        _ip(*inside, "link", "set", "lo", "up")
        self.gateway, self.host = gateway, address
        self.command_prefix = ("ip", "netns", "exec", self.netns)
        self.proxy = MirrorProxy(gateway, self.mirror)
        self.proxy.start()

    def _configure(self) -> None:
        super()._configure()
        assert self.proxy is not None
        (self.root / APT_PROXY_CONF).write_text(
            f'Acquire::http::Proxy "{self.proxy.url}";\n'
        )

    def _start_sshd_on_free_port(self) -> None:
        # The namespace is ours alone: the usual port is free.
        self._start_sshd(SSH_PORT)
        self.port = SSH_PORT

    def _release_network(self) -> None:
        remove_netns(self.netns)
        remove_link(self.host_link)
        if self.proxy is not None:
            self.proxy.close()
            self.proxy = None
