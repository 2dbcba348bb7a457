"""The data directory's database and secrets are readable by their owner only."""

from __future__ import annotations

import os
import stat
import subprocess
import sys


def test_it_creates_the_database_and_secrets_for_the_owner_only(tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env["BROKEFORGE_HOME"] = str(home)

    done = subprocess.run(
        [sys.executable, "-m", "brokeforge", "status"],
        env=env,
        capture_output=True,
        text=True,
    )

    # No account exists yet: the command says so, after creating the files.
    assert done.returncode == 2
    assert "create an account first" in done.stderr

    for name in ("brokeforge.sqlite3", "secret_key", "encryption_key"):
        mode = stat.S_IMODE((home / name).stat().st_mode)
        assert mode == 0o600, f"{name} has mode {mode:o}"
