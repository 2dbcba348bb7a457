"""The data directory: where the database and the generated secrets live.

`BROKEFORGE_HOME` names it; the default is `~/.local/share/brokeforge`. The
first run creates it with two secrets, each readable only by its owner: the
Django secret key and the key that encrypts SSH private keys at rest.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet


def home_dir() -> Path:
    configured = os.environ.get("BROKEFORGE_HOME")
    if configured:
        return Path(configured).expanduser().resolve()
    return Path.home() / ".local" / "share" / "brokeforge"


def ensure_home() -> Path:
    """Create the data directory and its secrets if they are missing."""
    home = home_dir()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    _ensure_secret(home / "secret_key", lambda: secrets.token_urlsafe(50))
    _ensure_secret(home / "encryption_key", lambda: Fernet.generate_key().decode())
    return home


def setup_django() -> None:
    """Load Django and bring the database schema up to date.

    Every command does this; a file lock in the data directory keeps two
    commands started at once from racing to create the same tables.
    """
    import fcntl

    import django
    from django.core.management import call_command

    django.setup()
    with open(ensure_home() / "migrate.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        call_command("migrate", verbosity=0, interactive=False)


def read_secret(name: str) -> str:
    return (ensure_home() / name).read_text().strip()


def _ensure_secret(path: Path, make: object) -> None:
    if path.exists():
        return
    assert callable(make)
    # O_EXCL: two processes starting at once must not write different keys.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as f:
        f.write(make() + "\n")
