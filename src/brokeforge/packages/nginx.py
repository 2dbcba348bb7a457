"""Nginx, from the distribution's archive (Debian and Ubuntu alike).

It has no data directory of its own: removing it purges the packages and
their configuration under /etc/nginx. Sites (a later kind) live on top.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from brokeforge.packages.apt import AptServiceKind
from brokeforge.packages.base import Field


class Nginx(AptServiceKind):
    name = "nginx"
    label = "Nginx"
    family = "nginx"
    timeouts = {"install": 600, "update": 600, "remove": 300}
    packages = ("nginx",)
    purge_packages = ("nginx", "nginx-core", "nginx-full", "nginx-common")
    service = "nginx"
    data_dir = ""
    remove_fields: ClassVar[Sequence[Field]] = ()
    # Ask the server itself over HTTP on port 80 (bash's /dev/tcp: no curl
    # needed), after checking the configuration it runs.
    ping = (
        "nginx -t -q 2>/dev/null && timeout 5 bash -c "
        '\'exec 3<>/dev/tcp/127.0.0.1/80; printf "HEAD / HTTP/1.0\\r\\n\\r\\n" >&3;'
        " head -n 1 <&3' 2>/dev/null | grep -q '^HTTP/'"
    )
    version_command = "nginx -v 2>&1 | sed 's|.*/||'"
