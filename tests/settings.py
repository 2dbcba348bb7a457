"""Settings for the test suite: a throwaway data directory, short bounds."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

if "BROKEFORGE_HOME" not in os.environ:
    _home = tempfile.mkdtemp(prefix="brokeforge-test-")
    os.environ["BROKEFORGE_HOME"] = _home
    atexit.register(shutil.rmtree, _home, ignore_errors=True)

from brokeforge.settings import *  # noqa: F403

# apt gives up on a dpkg lock held by someone else after this many seconds.
BROKEFORGE_APT_LOCK_TIMEOUT = 5
BROKEFORGE_CONNECT_TIMEOUT = 5.0
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# The fault-injection suite's probe kinds (see tests/faults/probe.py).
BROKEFORGE_EXTRA_KINDS = ["tests.faults.probe.Probe", "tests.faults.probe.SecondProbe"]

# Tests open and drop their PostgreSQL database around threads of their own:
# a connection kept after its work would keep the database from being dropped.
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
