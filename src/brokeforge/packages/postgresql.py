"""PostgreSQL, from the distribution's archive (Debian 12 ships version 15).

`postgresql` is Debian's meta package for the archive's current major
version; postgresql-common creates the `main` cluster on install. The
server answers on the local socket as the `postgres` system user.
"""

from __future__ import annotations

from brokeforge.packages.apt import AptServiceKind

#: Runs a SQL query as the database superuser, over the local socket.
PSQL = "runuser -u postgres -- psql -X -tA -d postgres"


class PostgreSQL(AptServiceKind):
    name = "postgresql"
    label = "PostgreSQL"
    timeouts = {"install": 900, "update": 900, "remove": 600}
    packages = ("postgresql",)
    purge_packages = (
        "postgresql",
        "postgresql-15",
        "postgresql-16",
        "postgresql-14",
        "postgresql-client-15",
        "postgresql-client-16",
        "postgresql-client-14",
        "postgresql-common",
        "postgresql-client-common",
    )
    service = "postgresql"
    data_dir = "/var/lib/postgresql"
    # From /, so psql does not complain that it cannot enter root's home.
    ping = f"cd / && {PSQL} -c 'SELECT 1' >/dev/null 2>&1"
    version_command = f"cd / && {PSQL} -c 'SHOW server_version'"
