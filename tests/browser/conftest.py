"""Browser tests: Debian's Chromium (driven by Playwright) against a real
`brokeforge serve` on a loopback port, with its own data directory.

Fixtures:

- ``brokeforge`` (function): a :class:`Served` BrokeForge — web and one worker
  started by `brokeforge serve` — plus a way to run the CLI on the same data
  directory, stop it and start it again on the same port.
- ``browser`` (package): headless Chromium.
- ``page`` (function): a browser page signed in to ``brokeforge``.
"""

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
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BROKEFORGE = [sys.executable, "-m", "brokeforge"]
USERNAME = "admin"
PASSWORD = "a long and unusual passphrase 42"
#: Where the screenshots shown in the README are written.
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """`brokeforge serve` on 127.0.0.1:port, and the CLI on its data directory."""

    def __init__(self, home: Path, log: Path) -> None:
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("BROKEFORGE_", "DJANGO_"))
        }
        self.env.update(
            BROKEFORGE_HOME=str(home),
            BROKEFORGE_CONNECT_TIMEOUT="5",
            BROKEFORGE_APT_LOCK_TIMEOUT="30",
            # Nothing may reach beyond this machine, defaults included.
            BROKEFORGE_MYSQL_APT_URL="http://127.0.0.1:9",
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("a") as out:
            self.process = subprocess.Popen(
                [*BROKEFORGE, "serve", "--port", str(self.port), "--workers", "1"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"brokeforge serve exited:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/login/", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"brokeforge serve did not answer in 30 s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail("brokeforge serve did not stop within 30 s of SIGTERM")
        self.process = None

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*BROKEFORGE, *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def ok(self, *args: str, stdin: str = "") -> str:
        done = self.cli(*args, stdin=stdin)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def status(self, server: str) -> dict[str, dict[str, Any]]:
        records = json.loads(self.ok("status", "--server", server, "--json"))
        return {record["kind"]: record for record in records}

    def add_server(self, name: str, port: int, private_key: bytes, tmp: Path) -> None:
        key_file = tmp / f"{name}.key"
        key_file.write_bytes(private_key)
        key_file.chmod(0o600)
        self.ok(
            "server", "add", name, "--host", "127.0.0.1", "--port", str(port),
            "--key", str(key_file),
        )  # fmt: skip
        key_file.unlink()


@pytest.fixture
def brokeforge(tmp_path: Path) -> Iterator[Served]:
    served = Served(tmp_path / "home", tmp_path / "serve.log")
    served.ok("createuser", USERNAME, "--password-stdin", stdin=PASSWORD + "\n")
    served.start()
    try:
        yield served
    finally:
        served.stop()


# Package scope, not session: Playwright's sync API keeps an event loop
# running in the main thread while it is open, and later tests that call
# asyncio.run() would fail.
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, brokeforge: Served) -> Iterator[Page]:
    context = browser.new_context(
        base_url=brokeforge.url, viewport={"width": 1200, "height": 900}
    )
    context.set_default_timeout(15_000)
    signed_in = context.new_page()
    signed_in.goto("/login/")
    signed_in.fill("#id_username", USERNAME)
    signed_in.fill("#id_password", PASSWORD)
    signed_in.click("button[type=submit]")
    signed_in.wait_for_url(f"{brokeforge.url}/")
    try:
        yield signed_in
    finally:
        context.close()
