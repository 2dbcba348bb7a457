"""A private, throwaway PostgreSQL cluster, as scripts/with-postgres makes one.

Socket only (no TCP port, so it never meets a PostgreSQL the machine runs),
owned by the `postgres` system user, trusting local connections, removed
afterwards. Unlike the test suite's cluster it keeps PostgreSQL's durable
defaults (fsync, synchronous commit). Needs root (it runs the server as
`postgres` with runuser).
"""

from __future__ import annotations

import contextlib
import glob
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


class NoPostgres(Exception):
    """PostgreSQL's server is not installed here."""


def bindir() -> Path:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
    )
    if not found or not Path(found[-1], "initdb").exists():
        raise NoPostgres("no PostgreSQL server on this machine (package postgresql)")
    if subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
        raise NoPostgres("no postgres system user (package postgresql)")
    return Path(found[-1])


def version() -> str:
    result = subprocess.run(
        [str(bindir() / "postgres"), "--version"], capture_output=True, text=True
    )
    # "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    words = result.stdout.split()
    return words[2] if len(words) > 2 else "unknown"


@contextlib.contextmanager
def cluster() -> Iterator[str]:
    """Start a cluster; yield its BROKEFORGE_DATABASE_URL; remove it."""
    bin_path = bindir()
    directory = Path(tempfile.mkdtemp(prefix="brokeforge-bench-pg."))
    shutil.chown(directory, "postgres")

    def as_postgres(*args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            check=True,
            capture_output=True,
        )

    try:
        as_postgres(
            str(bin_path / "initdb"),
            "-D",
            f"{directory}/data",
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        )
        # Durable commits as in production (unlike the test suite's
        # cluster): a dispatch figure must include the commit's fsync.
        options = f"-c listen_addresses='' -k {directory} -c max_connections=300"
        as_postgres(
            str(bin_path / "pg_ctl"),
            "-D",
            f"{directory}/data",
            "-l",
            f"{directory}/log",
            "-w",
            "-o",
            options,
            "start",
        )
        as_postgres(str(bin_path / "createdb"), "-h", str(directory), "brokeforge")
        yield f"postgres://postgres@/brokeforge?host={directory}"
    finally:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(bin_path / "pg_ctl"),
                "-D",
                f"{directory}/data",
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(directory, ignore_errors=True)
