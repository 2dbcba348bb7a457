"""`brokeforge serve`'s supervisor: its web processes and workers, restarted
when they die."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from brokeforge.cli import main
from brokeforge.cli.parser import build_parser
from brokeforge.supervisor import Supervisor, describe_exit
from tests.faults.harness import wait_for


def new_installation(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A data directory of its own with an account (any one-shot command
    migrates a new data directory's database)."""
    monkeypatch.setenv("BROKEFORGE_HOME", str(home))
    subprocess.run(
        [sys.executable, "-m", "brokeforge", "createuser", "a", "--password-stdin"],
        input="a long passphrase\n",
        text=True,
        check=True,
        capture_output=True,
    )


def test_it_describes_how_a_process_ended():
    assert describe_exit(-9) == "killed by signal 9 (SIGKILL)"
    assert describe_exit(3) == "exit status 3"


@pytest.mark.timeout(60)
@pytest.mark.django_db(transaction=True)
def test_it_starts_a_new_worker_when_one_is_killed(tmp_path, monkeypatch, caplog):
    new_installation(tmp_path, monkeypatch)
    supervisor = Supervisor("127.0.0.1", 0, workers=1)
    supervisor.start_worker(0)
    first = supervisor.workers[0]
    assert first is not None
    try:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)

        supervisor.step()

        second = supervisor.workers[0]
        assert second is not None
        assert second.pid != first.pid
        time.sleep(0.5)
        assert second.poll() is None
        assert any(
            r.action == "worker_exited"  # type: ignore[attr-defined]
            and "killed by signal 9" in r.getMessage()
            for r in caplog.records
        )
    finally:
        supervisor.stop()
    assert all(w is None or w.poll() is not None for w in supervisor.workers)


def _answers(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status)


@pytest.mark.timeout(90)
@pytest.mark.django_db(transaction=True)
def test_web_processes_share_the_port_and_a_killed_one_is_replaced(
    tmp_path, monkeypatch, caplog
):
    new_installation(tmp_path, monkeypatch)
    supervisor = Supervisor("127.0.0.1", 0, workers=0, web_processes=2)
    supervisor.listen()
    assert supervisor.listener is not None
    url = f"http://127.0.0.1:{supervisor.listener.getsockname()[1]}/login/"
    try:
        for slot in range(2):
            supervisor.start_web(slot)
        first, second = supervisor.webs
        assert first is not None and second is not None
        wait_for(lambda: _answers(url) == 200, 60, "the web processes to answer")
        # Both serve the one port: with one killed, the other answers at once.
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        assert all(_answers(url) == 200 for _ in range(5))

        supervisor.step()

        replaced = supervisor.webs[0]
        assert replaced is not None and replaced.pid != first.pid
        assert supervisor.webs[1] is second and second.poll() is None
        assert any(
            r.action == "web_exited"  # type: ignore[attr-defined]
            and "killed by signal 9" in r.getMessage()
            for r in caplog.records
        )
        os.kill(second.pid, signal.SIGKILL)
        second.wait(timeout=10)
        wait_for(lambda: _answers(url) == 200, 60, "the new web process to answer")
    finally:
        supervisor.stop()
    assert all(w is None or w.poll() is not None for w in supervisor.webs)


@pytest.mark.parametrize("value", ["0", "33", "two"])
def test_serve_refuses_a_bad_number_of_web_processes(value, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["serve", "--web-processes", value])

    assert exit_.value.code == 2
    assert "must be a whole number from 1 to 32" in capsys.readouterr().err


def test_serve_stops_with_a_reason_when_the_port_is_taken(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code = main(["serve", "--port", str(port)])

    assert code == 1
    assert f"127.0.0.1:{port} is already in use" in capsys.readouterr().err
