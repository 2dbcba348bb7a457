"""Settings for the test suite: a throwaway data directory, short bounds."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("BROKEFORGE_HOME", tempfile.mkdtemp(prefix="brokeforge-test-"))

from brokeforge.settings import *  # noqa: E402, F403

# apt gives up on a dpkg lock held by someone else after this many seconds.
BROKEFORGE_APT_LOCK_TIMEOUT = 5
BROKEFORGE_CONNECT_TIMEOUT = 5.0
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
