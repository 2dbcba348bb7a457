"""Every package kind BrokeForge knows, by name.

Adding a kind means writing its module and listing its class here.
"""

from __future__ import annotations

from brokeforge.lifecycle.errors import ActionRefused
from brokeforge.packages.base import PackageKind
from brokeforge.packages.mariadb import MariaDB
from brokeforge.packages.mysql import MySQL
from brokeforge.packages.redis import Redis

KINDS: dict[str, PackageKind] = {
    kind.name: kind for kind in (Redis(), MariaDB(), MySQL())
}


def get_kind(name: str) -> PackageKind:
    try:
        return KINDS[name]
    except KeyError:
        known = ", ".join(sorted(KINDS))
        raise ActionRefused(
            f"unknown package kind {name!r}: choose one of {known}"
        ) from None
