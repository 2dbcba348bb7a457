"""MySQL: Ubuntu's archive has it; on Debian it comes from MySQL's own repository.

Debian ships MariaDB instead of MySQL, so on Debian the install adds MySQL's
apt repository (`BROKEFORGE_MYSQL_APT_URL`, MySQL's own by default) with its
signing key, then installs `mysql-server` from there.
"""

from __future__ import annotations

from django.conf import settings

from brokeforge.packages.apt import AptServiceKind, q
from brokeforge.packages.base import HostFacts

KEYRING = "/etc/apt/keyrings/mysql.asc"
SOURCE_LIST = "/etc/apt/sources.list.d/mysql.list"
# MySQL's current long-term-support series, as named in its apt repository.
DEBIAN_COMPONENT = "mysql-8.4-lts"
SIGNING_KEY_NAME = "RPM-GPG-KEY-mysql-2023"


class MySQL(AptServiceKind):
    name = "mysql"
    label = "MySQL"
    conflicts = frozenset({"mariadb"})
    timeouts = {"install": 900, "update": 900, "remove": 600}
    packages = ("mysql-server",)
    purge_packages = (
        "mysql-server",
        "mysql-community-server",
        "mysql-community-server-core",
        "mysql-client",
        "mysql-community-client",
        "mysql-common",
    )
    service = "mysql"
    data_dir = "/var/lib/mysql"
    ping = "mysqladmin ping >/dev/null 2>&1"
    version_command = "mysql -N -e 'SELECT VERSION()'"

    def install_steps(self, facts: HostFacts) -> str:
        if facts.os_id == "debian":
            return self._add_repository(facts) + super().install_steps(facts)
        return super().install_steps(facts)

    def remove_steps(self, facts: HostFacts, data: str) -> str:
        steps = super().remove_steps(facts, data)
        if facts.os_id == "debian":
            steps += f"rm -f {SOURCE_LIST} {KEYRING}\n"
        return steps

    def _add_repository(self, facts: HostFacts) -> str:
        base = str(settings.BROKEFORGE_MYSQL_APT_URL).rstrip("/")
        key_url = f"{base}/{SIGNING_KEY_NAME}"
        source = (
            f"deb [signed-by={KEYRING}] {base}/apt/debian "
            f"{facts.codename} {DEBIAN_COMPONENT}"
        )
        unreachable = f"could not reach MySQL repository: downloading {key_url} failed"
        no_package = (
            f"MySQL repository {base}/apt/debian offers no mysql-server "
            f"for {facts.codename}"
        )
        return (
            "bf_apt_update\n"
            "bf_apt install ca-certificates curl\n"
            "install -d -m 0755 /etc/apt/keyrings\n"
            f"if ! curl -fsSL --max-time 60 {q(key_url)} -o {KEYRING}.new; then\n"
            f"  echo {q(unreachable)} >&2\n"
            "  exit 1\n"
            "fi\n"
            f"mv {KEYRING}.new {KEYRING}\n"
            f"echo {q(source)} > {SOURCE_LIST}\n"
            "bf_apt_update\n"
            "if ! apt-cache show mysql-server >/dev/null 2>&1; then\n"
            f"  echo {q(no_package)} >&2\n"
            "  exit 1\n"
            "fi\n"
        )
