"""Ask for one install on each of many servers from one process, through
the lifecycle as `brokeforge install` does locally (no HTTP, no token).

The fleet benchmark runs it as a subprocess on the installation's database
to tell the engine's own pace apart from the web process's: it loads
Django, prints `ready`, waits for a line on stdin, asks for every install
in a row, then prints one JSON line: when it started and ended, and the
operation ids.

    python -m bench.request_local KIND SECONDS SERVER...
"""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> int:
    from brokeforge.home import setup_django

    setup_django()
    from django.contrib.auth import get_user_model

    from bench.instance import ACCOUNT
    from brokeforge.accounts.actor import Actor
    from brokeforge.packages.service import request_action
    from brokeforge.servers.models import Server

    kind, seconds, names = argv[0], float(argv[1]), argv[2:]
    actor = Actor.local(get_user_model().objects.get(username=ACCOUNT))
    servers = {s.name: s for s in Server.objects.filter(name__in=names)}
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.time()
    ids = [
        request_action(
            servers[name], kind, "install", params={"seconds": seconds}, actor=actor
        ).pk
        for name in names
    ]
    print(json.dumps({"started": started, "ended": time.time(), "ids": ids}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
