"""The server page in real Chromium, live: changes appear without a reload.

Each test marks the window object after the last navigation it caused; the
mark surviving to the end proves the page learned the change by itself
(server-sent events and htmx), not by being reloaded.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import SCREENSHOTS, Served, free_port
from tests.testhosts.fixtures import DebianTestHost, ScriptedSSHTestServer

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

DEBIAN_12 = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION_CODENAME=bookworm
ID=debian
BROKEFORGE_INIT=systemd
"""
APT_ERROR = "E: Unable to locate package redis-server"


def mark(page: Page) -> None:
    page.wait_for_load_state()
    page.evaluate("window.notReloaded = true")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("window.notReloaded === true"), "the page was reloaded"


def wait_live(page: Page) -> None:
    expect(page.locator("#live-state")).to_have_text("live")


def test_it_shows_a_failure_then_a_retry_live(
    page: Page,
    brokeforge: Served,
    scripted_ssh: ScriptedSSHTestServer,
    tmp_path: Path,
) -> None:
    scripted_ssh.add_rule("cat /etc/os-release", stdout=DEBIAN_12)
    # The first install fails after a moment; the retry succeeds, slowly
    # enough to be seen running.
    scripted_ssh.add_rule(
        ".", delay=2, stderr=f"Reading package lists...\n{APT_ERROR}\n",
        exit_status=100, times=1,
    )  # fmt: skip
    scripted_ssh.add_rule(r"bf_ping\(\)", stdout="7.0.15\n")
    scripted_ssh.add_rule(".", delay=2, stdout="Setting up redis-server ...\n")
    key = scripted_ssh.client_key.export_private_key()
    brokeforge.add_server("scripted", scripted_ssh.port, key, tmp_path)
    row = page.locator("#db-redis")

    page.goto("/servers/scripted/")
    wait_live(page)
    row.get_by_role("button", name="Install", exact=True).click()
    mark(page)
    expect(row.locator("td.status .badge-installing")).to_be_visible()
    expect(row.locator("td.status .badge-failed")).to_be_visible(timeout=20_000)

    assert_not_reloaded(page)
    expect(row.locator("pre.error")).to_have_text(f"{APT_ERROR} (exit status 100)")
    expect(row.get_by_role("button", name="Retry")).to_be_visible()
    expect(row.get_by_role("button", name="Install", exact=True)).to_have_count(0)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "server-page-failed.png")

    # A forged Install on the failed record is refused and changes nothing.
    answer = page.evaluate(
        """async () => {
            const token = document.querySelector("[name=csrfmiddlewaretoken]").value;
            const response = await fetch("/servers/scripted/redis/install/", {
                method: "POST",
                headers: {"Content-Type": "application/x-www-form-urlencoded"},
                body: "csrfmiddlewaretoken=" + encodeURIComponent(token),
            });
            return await response.text();
        }"""
    )
    assert "Refused: Redis on scripted failed its last install: use Retry" in answer
    redis = brokeforge.status("scripted")["redis"]
    assert (redis["status"], redis["error"]) == (
        "failed",
        f"{APT_ERROR} (exit status 100)",
    )

    # The full output is one click away.
    row.get_by_role("link", name=re.compile("Full output")).click()
    expect(page.locator("#error")).to_have_text(f"{APT_ERROR} (exit status 100)")
    expect(page.locator("#op-state .badge-failed")).to_be_visible()
    page.screenshot(path=SCREENSHOTS / "operation-log.png", full_page=True)

    page.go_back()
    row.get_by_role("button", name="Retry").click()
    mark(page)
    expect(row.locator("td.status .badge-active")).to_be_visible(timeout=20_000)

    assert_not_reloaded(page)
    expect(row.locator("pre.error")).to_have_count(0)
    expect(row).to_contain_text("7.0.15")
    expect(row).to_contain_text("(attempt 2)")
    expect(page.locator("#recent-operations tbody tr")).to_have_count(2)


def test_it_shows_cli_changes_and_resumes_after_a_restart(
    page: Page, brokeforge: Served, scripted_ssh: ScriptedSSHTestServer, tmp_path: Path
) -> None:
    closed_port = free_port()  # nothing listens there
    key = scripted_ssh.client_key.export_private_key()
    brokeforge.add_server("nowhere", closed_port, key, tmp_path)
    row = page.locator("#db-redis")
    page.goto("/servers/nowhere/")
    wait_live(page)
    mark(page)

    brokeforge.ok("install", "redis", "--server", "nowhere")

    refused = f"could not connect to 127.0.0.1:{closed_port}: connection refused"
    expect(row.locator("pre.error")).to_have_text(refused, timeout=20_000)
    expect(row).to_contain_text("(attempt 1)")
    assert_not_reloaded(page)

    brokeforge.stop()
    expect(page.locator("#live-state")).to_have_attribute("data-state", "lost")
    # While BrokeForge is down, the CLI asks for a retry: the event is only
    # in the log, and the page must pick it up once it reconnects.
    brokeforge.ok("retry", "redis", "--server", "nowhere")
    assert brokeforge.status("nowhere")["redis"]["status"] == "pending"
    brokeforge.start()

    wait_live(page)
    expect(row).to_contain_text("(attempt 2)", timeout=20_000)
    expect(row.locator("td.status .badge-failed")).to_be_visible(timeout=20_000)
    assert_not_reloaded(page)


def test_it_cancels_a_running_operation_and_tails_its_output_live(
    page: Page,
    brokeforge: Served,
    scripted_ssh: ScriptedSSHTestServer,
    tmp_path: Path,
) -> None:
    scripted_ssh.add_rule("cat /etc/os-release", stdout=DEBIAN_12)
    # The first script prints a line, then hangs until it is cancelled.
    scripted_ssh.add_rule(
        "bf_", stdout="Reading package lists... Done\n", hang=True, times=1
    )
    scripted_ssh.add_rule(r"bf_ping\(\)", stdout="10.11.6\n")
    scripted_ssh.add_rule(".")  # MariaDB's install, the remote kill
    key = scripted_ssh.client_key.export_private_key()
    brokeforge.add_server("hangs", scripted_ssh.port, key, tmp_path)
    redis = page.locator("#db-redis")
    mariadb = page.locator("#db-mariadb")
    page.goto("/servers/hangs/")
    wait_live(page)
    redis.get_by_role("button", name="Install", exact=True).click()
    expect(redis.locator("td.status .badge-installing")).to_be_visible()

    # The operation page tails the output while the operation runs.
    redis.get_by_role("link", name=re.compile(r"operation #\d+")).first.click()
    mark(page)
    expect(page.locator("#output")).to_contain_text(
        "Reading package lists... Done", timeout=20_000
    )
    expect(page.locator("#op-state .badge-running")).to_be_visible()
    assert_not_reloaded(page)

    # A second install on the server waits its turn, and says so.
    page.goto("/servers/hangs/")
    mariadb.get_by_role("button", name="Install", exact=True).click()
    wait_live(page)
    mark(page)
    expect(mariadb.locator(".waiting")).to_contain_text(
        re.compile(
            r"queued behind install of Redis on hangs \(#\d+\), which is running"
        )
    )
    expect(redis.get_by_role("button", name="Install", exact=True)).to_have_count(0)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("#family-databases table.kinds").screenshot(
        path=SCREENSHOTS / "server-page-waiting.png"
    )
    redis.get_by_role("button", name="Cancel install").click()
    mark(page)

    expect(redis.locator("td.status .badge-failed")).to_be_visible(timeout=20_000)
    expect(redis.locator("pre.error")).to_contain_text(
        "cancelled by admin while it ran"
    )
    expect(redis.get_by_role("button", name="Retry")).to_be_visible()
    expect(redis.get_by_role("button", name=re.compile("^Cancel"))).to_have_count(0)
    # With Redis out of the way, MariaDB's install runs, live.
    expect(mariadb.locator("td.status .badge-active")).to_be_visible(timeout=20_000)
    assert_not_reloaded(page)
    status = brokeforge.status("hangs")
    assert (status["redis"]["status"], status["mariadb"]["status"]) == (
        "failed",
        "active",
    )


@pytest.mark.debian_host
@pytest.mark.timeout(300)
def test_it_installs_and_removes_redis_on_a_real_host_live(
    page: Page, brokeforge: Served, debian_host: DebianTestHost, tmp_path: Path
) -> None:
    key = debian_host.client_key.export_private_key()
    brokeforge.add_server("deb", debian_host.port, key, tmp_path)
    row = page.locator("#db-redis")
    try:
        page.goto("/servers/deb/")
        wait_live(page)
        row.get_by_role("button", name="Install", exact=True).click()
        mark(page)
        expect(row.locator("td.status .badge-active")).to_be_visible(timeout=180_000)
        assert_not_reloaded(page)
        version = debian_host.run("redis-server --version").stdout
        expect(row).to_contain_text(version.split()[2].removeprefix("v="))

        # Remove goes through its confirm step, which asks about the data.
        row.get_by_role("button", name="Remove…").click()
        page.get_by_role("button", name="Remove Redis").click()
        expect(page.locator("#field-data .errorlist")).to_contain_text(
            "Choose its data."
        )
        page.get_by_label("delete", exact=True).check()
        page.get_by_role("button", name="Remove Redis").click()
        mark(page)
        expect(row.locator("td.status .badge-absent")).to_be_visible(timeout=120_000)
        assert_not_reloaded(page)
        assert brokeforge.status("deb") == {}
    finally:
        debian_host.run("apt-get purge -y -q redis-server redis-tools || true")
    assert debian_host.run("command -v redis-server || echo gone").stdout == "gone\n"


def test_it_signs_out_and_then_shows_nothing(
    page: Page, brokeforge: Served, scripted_ssh: ScriptedSSHTestServer, tmp_path: Path
) -> None:
    key = scripted_ssh.client_key.export_private_key()
    brokeforge.add_server("web-1", scripted_ssh.port, key, tmp_path)
    page.goto("/servers/web-1/")
    wait_live(page)

    page.get_by_role("button", name="Sign out").click()

    page.wait_for_url(f"{brokeforge.url}/login/")
    page.goto("/servers/web-1/")
    assert page.url == f"{brokeforge.url}/login/?next=/servers/web-1/"
    status = page.evaluate("async () => (await fetch('/servers/web-1/events/')).status")
    assert status == 403
