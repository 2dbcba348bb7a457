"""Every package kind BrokeForge knows, by name.

Adding a kind means writing its module and listing its class here.
"""

from __future__ import annotations

from django.conf import settings
from django.utils.module_loading import import_string

from brokeforge.lifecycle.errors import ActionRefused
from brokeforge.packages.base import PackageKind
from brokeforge.packages.mariadb import MariaDB
from brokeforge.packages.mysql import MySQL
from brokeforge.packages.redis import Redis

KINDS: dict[str, PackageKind] = {
    kind.name: kind for kind in (Redis(), MariaDB(), MySQL())
}


def _load_extra_kinds() -> None:
    """Kinds named in the BROKEFORGE_EXTRA_KINDS setting (dotted class paths).

    The test suite adds its fault-injection probe this way; nothing else
    sets it.
    """
    for path in getattr(settings, "BROKEFORGE_EXTRA_KINDS", ()):
        kind: PackageKind = import_string(path)()
        KINDS.setdefault(kind.name, kind)


def get_kind(name: str) -> PackageKind:
    if name not in KINDS:
        _load_extra_kinds()
    try:
        return KINDS[name]
    except KeyError:
        known = ", ".join(sorted(KINDS))
        raise ActionRefused(
            f"unknown package kind {name!r}: choose one of {known}"
        ) from None
