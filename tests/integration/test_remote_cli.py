"""The CLI against a remote BrokeForge: a real `brokeforge serve` on loopback,
and a client with its own empty data directory and a token."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_cli import brokeforge, create_account, free_port

pytestmark = pytest.mark.timeout(300)


def clean_env(home: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BROKEFORGE_", "DJANGO_"))
    }
    env["BROKEFORGE_HOME"] = str(home)
    return env


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[dict[str, object]]:
    """A served BrokeForge with an account and two tokens (read-write, read-only)."""
    server_env = clean_env(tmp_path / "server-home")
    create_account(server_env, "alice")
    tokens = {}
    for name, extra in (("rw", []), ("ro", ["--read-only"])):
        made = brokeforge(
            server_env, "token", "create", "--name", name, "--json", *extra
        )
        assert made.returncode == 0, made.stderr
        tokens[name] = json.loads(made.stdout)["token"]
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "brokeforge", "serve", "--port", str(port)],
            env=server_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/api/v1/openapi.json", timeout=2):
                    break
            except OSError:
                time.sleep(0.3)
        yield {"url": url, "tokens": tokens, "server_env": server_env}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=40)


def client(remote: dict[str, object], home: Path, token: str) -> dict[str, str]:
    env = clean_env(home)
    env["BROKEFORGE_URL"] = str(remote["url"])
    env["BROKEFORGE_TOKEN"] = token
    return env


def test_the_cli_drives_a_remote_brokeforge_with_a_token(
    remote: dict[str, object], tmp_path: Path
) -> None:
    tokens: dict[str, str] = remote["tokens"]  # type: ignore[assignment]
    home = tmp_path / "client-home"
    env = client(remote, home, tokens["rw"])
    closed = free_port()

    added = brokeforge(
        env, "server", "add", "nowhere", "--host", "127.0.0.1", "--port", str(closed)
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith(f"added server nowhere (root@127.0.0.1:{closed})")
    listed = brokeforge(env, "server", "list", "--json")
    assert [(s["name"], s["owner"]) for s in json.loads(listed.stdout)] == [
        ("nowhere", "alice")
    ]

    checked = brokeforge(env, "server", "check", "nowhere")
    assert checked.returncode == 1
    assert f"could not connect to 127.0.0.1:{closed}" in checked.stderr

    # A real worker runs the install and fails it: exit 1 with the reason.
    installed = brokeforge(env, "install", "redis", "--server", "nowhere", "--wait")
    assert installed.returncode == 1, installed.stdout + installed.stderr
    assert f"could not connect to 127.0.0.1:{closed}" in installed.stderr
    status = json.loads(brokeforge(env, "status", "--json").stdout)
    assert [(r["kind"], r["status"]) for r in status] == [("redis", "failed")]
    assert "could not connect" in status[0]["error_message"]

    refused = brokeforge(env, "update", "redis", "--server", "nowhere")
    assert refused.returncode == 2
    assert "failed its last install: use Retry" in refused.stderr
    retried = brokeforge(env, "retry", "redis", "--server", "nowhere", "--json")
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)["operation"]["attempt"] == 2

    operations = json.loads(brokeforge(env, "operations", "--json").stdout)
    assert [op["attempt"] for op in operations] == [2, 1]
    logged = brokeforge(env, "log", str(operations[1]["id"]))
    assert logged.stdout.rstrip().endswith(
        f"could not connect to 127.0.0.1:{closed}: connection refused"
    )

    audit = json.loads(brokeforge(env, "audit", "--server", "nowhere", "--json").stdout)
    assert {(e["via"], e["address"], e["token"]) for e in audit} == {
        ("api", "127.0.0.1", "rw")
    }
    assert "record.install" in [e["action"] for e in audit]
    # The client used the API only: its own data directory stayed empty.
    assert not home.exists() or not any(home.iterdir())


def test_a_read_only_token_is_refused_on_writes_and_a_revoked_one_at_all(
    remote: dict[str, object], tmp_path: Path
) -> None:
    tokens: dict[str, str] = remote["tokens"]  # type: ignore[assignment]
    reader = client(remote, tmp_path / "reader", tokens["ro"])

    assert brokeforge(reader, "server", "list").returncode == 0
    write = brokeforge(reader, "server", "add", "x", "--host", "127.0.0.1")
    assert write.returncode == 2
    assert "token ro is read-only" in write.stderr

    revoked = brokeforge(remote["server_env"], "token", "revoke", "ro")  # type: ignore[arg-type]
    assert revoked.returncode == 0, revoked.stderr
    after = brokeforge(reader, "server", "list")
    assert after.returncode == 2
    assert after.stderr == "error: token ro was revoked\n"

    unreachable = brokeforge(
        {**reader, "BROKEFORGE_URL": f"http://127.0.0.1:{free_port()}"}, "status"
    )
    assert unreachable.returncode == 2
    assert "cannot reach http://127.0.0.1:" in unreachable.stderr
