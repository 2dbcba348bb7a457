"""The README's path, end to end: `brokeforge serve` with a real worker, the
CLI, and the real Debian test host."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.testhosts.fixtures import DebianTestHost

pytestmark = [pytest.mark.debian_host, pytest.mark.timeout(600)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BROKEFORGE_", "DJANGO_"))
    }
    env["BROKEFORGE_HOME"] = str(tmp_path / "home")
    env["BROKEFORGE_APT_LOCK_TIMEOUT"] = "30"
    return env


def brokeforge(
    env: dict[str, str], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "brokeforge", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=400,
    )


def create_account(env: dict[str, str], name: str = "admin") -> None:
    created = brokeforge(
        env, "createuser", name, "--password-stdin", stdin="a long passphrase\n"
    )
    assert created.returncode == 0, created.stderr


@pytest.fixture
def serving(home: dict[str, str], tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "brokeforge", "serve", "--port", str(port)],
            env=home,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/login/", timeout=2):
                    break
            except OSError:
                time.sleep(0.3)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail("brokeforge serve did not stop within 30 s of SIGTERM")
    assert process.returncode == 0
    assert "stopping BrokeForge" in log.read_text()


def test_it_installs_and_removes_redis_through_the_cli_and_a_real_worker(
    home: dict[str, str], serving: str, debian_host: DebianTestHost, tmp_path: Path
):
    created = brokeforge(
        home, "createuser", "admin", "--password-stdin", stdin="a long passphrase\n"
    )
    assert created.returncode == 0, created.stderr
    key_file = tmp_path / "id_ed25519"
    key_file.write_bytes(debian_host.client_key.export_private_key())
    key_file.chmod(0o600)

    added = brokeforge(
        home,
        "server",
        "add",
        "deb",
        "--host",
        "127.0.0.1",
        "--port",
        str(debian_host.port),
        "--key",
        str(key_file),
    )
    assert added.returncode == 0, added.stderr
    checked = brokeforge(home, "server", "check", "deb")
    assert checked.returncode == 0, checked.stderr
    assert "host key SHA256:" in checked.stdout

    installed = brokeforge(home, "install", "redis", "--server", "deb", "--wait")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "redis-server" in installed.stdout
    assert installed.stdout.rstrip().endswith("succeeded")
    status = json.loads(brokeforge(home, "status", "--json").stdout)
    assert [(r["kind"], r["status"]) for r in status] == [("redis", "active")]
    assert debian_host.run("redis-cli ping").stdout.strip() == "PONG"

    refused = brokeforge(home, "install", "redis", "--server", "deb")
    assert refused.returncode == 2
    assert refused.stderr == "error: Redis on deb is already installed\n"

    removed = brokeforge(
        home, "remove", "redis", "--server", "deb", "--delete-data", "--wait"
    )
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert json.loads(brokeforge(home, "status", "--json").stdout) == []


def test_it_exits_non_zero_with_the_reason_when_an_operation_fails(
    home: dict[str, str], serving: str
):
    create_account(home)
    brokeforge(home, "server", "add", "nowhere", "--host", "127.0.0.1", "--port", "9")

    failed = brokeforge(home, "install", "redis", "--server", "nowhere", "--wait")

    assert failed.returncode == 1
    assert "could not connect to 127.0.0.1:9: connection refused" in failed.stderr
    status = brokeforge(home, "status", "--server", "nowhere")
    assert status.stdout == (
        "nowhere\tredis\tfailed\tcould not connect to 127.0.0.1:9: connection refused\n"
    )
    removed = brokeforge(home, "server", "remove", "nowhere")
    assert removed.returncode == 0, removed.stderr
    assert brokeforge(home, "status").stdout.startswith("no records yet")


def test_it_refuses_bad_input_and_changes_nothing(home: dict[str, str]):
    create_account(home)
    bad = brokeforge(home, "server", "add", "web", "--host", "a;rm -rf /")
    assert bad.returncode == 2
    assert "is not a valid host" in bad.stderr
    bad_port = brokeforge(home, "server", "add", "web", "--host", "h", "--port", "0")
    assert "is not a valid port" in bad_port.stderr
    numeric = brokeforge(home, "server", "add", "web", "--host", "256.1.1.1")
    assert "is not a valid host" in numeric.stderr
    assert brokeforge(home, "server", "list").stdout == ""
    bad_user = brokeforge(
        home, "createuser", "bad name", "--password-stdin", stdin="a long phrase\n"
    )
    assert bad_user.returncode == 2
    assert "Enter a valid username" in bad_user.stderr
