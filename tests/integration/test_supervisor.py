"""`brokeforge serve`'s supervisor restarts a worker process that dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from brokeforge.supervisor import Supervisor, describe_exit


def test_it_describes_how_a_process_ended():
    assert describe_exit(-9) == "killed by signal 9 (SIGKILL)"
    assert describe_exit(3) == "exit status 3"


@pytest.mark.timeout(60)
@pytest.mark.django_db(transaction=True)
def test_it_starts_a_new_worker_when_one_is_killed(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("BROKEFORGE_HOME", str(tmp_path))
    # Any one-shot command migrates the new data directory's database.
    subprocess.run(
        [sys.executable, "-m", "brokeforge", "createuser", "a", "--password-stdin"],
        input="a long passphrase\n",
        text=True,
        check=True,
        capture_output=True,
    )
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
