"""MariaDB, from the distribution's archive (Debian and Ubuntu alike)."""

from __future__ import annotations

from brokeforge.packages.apt import AptServiceKind


class MariaDB(AptServiceKind):
    name = "mariadb"
    label = "MariaDB"
    conflicts = frozenset({"mysql"})
    timeouts = {"install": 900, "update": 900, "remove": 600}
    packages = ("mariadb-server",)
    purge_packages = ("mariadb-server", "mariadb-client", "mariadb-common")
    service = "mariadb"
    data_dir = "/var/lib/mysql"
    # The root account authenticates over the unix socket on a fresh install.
    ping = "mariadb -N -e 'SELECT 1' >/dev/null 2>&1"
    version_command = "mariadb -N -e 'SELECT VERSION()'"
