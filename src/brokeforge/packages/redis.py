"""Redis, from the distribution's archive (Debian and Ubuntu alike)."""

from __future__ import annotations

from brokeforge.packages.apt import AptServiceKind


class Redis(AptServiceKind):
    name = "redis"
    label = "Redis"
    timeouts = {"install": 600, "update": 600, "remove": 300}
    packages = ("redis-server",)
    purge_packages = ("redis-server", "redis-tools")
    service = "redis-server"
    data_dir = "/var/lib/redis"
    ping = "redis-cli ping 2>/dev/null | grep -qx PONG"
    version_command = "redis-server --version | sed -E 's/.* v=([^ ]+).*/\\1/'"
