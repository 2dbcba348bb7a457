"""Make the test-host fixtures and the ``debian_host`` marker available here.

The main suite loads the same fixtures with
``pytest_plugins = ["tests.testhosts.fixtures"]`` in its top-level conftest;
``pytest_plugins`` is not allowed in a nested conftest, hence the imports.
"""

from __future__ import annotations

from tests.testhosts.fixtures import (  # noqa: F401
    debian_host,
    fresh_debian_host,
    netns_debian_host,
    pytest_configure,
    scripted_ssh,
)
