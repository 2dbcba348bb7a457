"""Pytest fixtures for the test hosts.

Load them from any test suite with::

    pytest_plugins = ["tests.testhosts.fixtures"]

(in the top-level conftest.py).  Fixtures:

- ``debian_host`` (session): a running :class:`DebianTestHost`, shared by the
  whole session; tests that change it should undo their changes or use
  ``fresh_debian_host``.
- ``fresh_debian_host`` (function): a new host for one test (~2 s to start
  once the base image is cached).
- ``netns_debian_host`` (session): a running :class:`NamespacedDebianTestHost`,
  the same Debian host in its own network namespace (for firewall tests: its
  rules never touch this machine's); share it and undo your changes.
- ``scripted_ssh`` (function): a running :class:`ScriptedSSHTestServer` that
  accepts ``.client_key``, with no rules.

Tests using the Debian host fixtures should carry ``@pytest.mark.debian_host``
(registered here) and a generous ``@pytest.mark.timeout`` for the first,
uncached build of the base image.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests.testhosts.debian_host import DebianHost
from tests.testhosts.netns_host import NamespacedDebianHost
from tests.testhosts.scripted_ssh import ScriptedSSHServer

_Connecting = AbstractAsyncContextManager[asyncssh.SSHClientConnection]


def _public_line(key: asyncssh.SSHKey) -> str:
    return key.export_public_key("openssh").decode().strip()


class DebianTestHost(DebianHost):
    """A :class:`DebianHost` that carries the client key root logs in with."""

    def __init__(self, workdir: Path, client_key: asyncssh.SSHKey) -> None:
        super().__init__(workdir, _public_line(client_key))
        #: Private key (asyncssh) authorized for root on the host.
        self.client_key = client_key

    def known_hosts(self) -> asyncssh.SSHKnownHosts:
        """The host's current keys in asyncssh's known_hosts form."""
        return asyncssh.import_known_hosts(self.known_hosts_text())

    def connect(self, **options: Any) -> _Connecting:
        """``asyncssh.connect`` to the host as root, verifying its current key.

        Use as ``async with host.connect() as conn``; keyword arguments
        override the defaults.
        """
        kwargs: dict[str, Any] = {
            "username": "root",
            "client_keys": [self.client_key],
            "known_hosts": self.known_hosts(),
            "agent_path": None,
        }
        kwargs.update(options)
        return asyncssh.connect(self.host, self.port, **kwargs)


class NamespacedDebianTestHost(DebianTestHost, NamespacedDebianHost):
    """A :class:`DebianTestHost` in its own network namespace."""


class ScriptedSSHTestServer(ScriptedSSHServer):
    """A :class:`ScriptedSSHServer` that authorizes a generated client key."""

    def __init__(self) -> None:
        #: Private key (asyncssh) the server accepts.
        self.client_key = asyncssh.generate_private_key("ssh-ed25519")
        super().__init__(authorized_keys=[_public_line(self.client_key)])

    def connect(self, **options: Any) -> _Connecting:
        """``asyncssh.connect`` with the client key, verifying the host key.

        Use as ``async with server.connect() as conn``; keyword arguments
        override the defaults.
        """
        kwargs: dict[str, Any] = {
            "username": "root",
            "client_keys": [self.client_key],
            "known_hosts": asyncssh.import_known_hosts(self.known_hosts_line()),
            "agent_path": None,
        }
        kwargs.update(options)
        return asyncssh.connect(self.host, self.port, **kwargs)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "debian_host: needs the real Debian test host (root, debootstrap, "
        "network to the Debian mirror on first use)",
    )


@pytest.fixture(scope="session")
def debian_host(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DebianTestHost]:
    key = asyncssh.generate_private_key("ssh-ed25519")
    with DebianTestHost(tmp_path_factory.mktemp("debian-host"), key) as host:
        yield host


@pytest.fixture(scope="session")
def netns_debian_host(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[NamespacedDebianTestHost]:
    key = asyncssh.generate_private_key("ssh-ed25519")
    workdir = tmp_path_factory.mktemp("netns-host")
    with NamespacedDebianTestHost(workdir, key) as host:
        yield host


@pytest.fixture
def fresh_debian_host(tmp_path: Path) -> Iterator[DebianTestHost]:
    key = asyncssh.generate_private_key("ssh-ed25519")
    with DebianTestHost(tmp_path / "debian-host", key) as host:
        yield host


@pytest.fixture
def scripted_ssh() -> Iterator[ScriptedSSHTestServer]:
    with ScriptedSSHTestServer() as server:
        yield server
