"""The `brokeforge` command: a thin shell over the services or a remote API.

Locally, commands act on this installation's database as one account
(`--as NAME`, or the only account). With `--url URL --token T` (or
BROKEFORGE_URL / BROKEFORGE_TOKEN), the same commands talk to a remote
BrokeForge over its API. Exit status: 0 success, 1 the operation (or the
connection check) failed, 2 usage error or refused.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from brokeforge.cli.backends import EXIT_REFUSED, CommandError
from brokeforge.cli.commands import act
from brokeforge.cli.commands import follow as _follow_with
from brokeforge.cli.parser import LONG_RUNNING, build_parser

__all__ = ["CommandError", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # A kind's own options (--engine, --name, ...) are known only once the
    # kind is: the action verbs check them themselves.
    if extra and getattr(args, "handler", None) is not act:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.kind_options = extra
    # The database, its WAL files and the secrets are for this user alone,
    # whatever the data directory's own mode.
    os.umask(0o077)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "brokeforge.settings")
    if args.command not in LONG_RUNNING and not args.verbose:
        # A one-shot command prints its own results, failures included (a
        # cancelled operation's reason, say); the log would repeat them.
        # It is for -v.
        os.environ.setdefault("BROKEFORGE_LOG_LEVEL", "CRITICAL")
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code


def _follow(operation_id: int) -> int:
    """Follow an operation in the local database as its only account."""
    from brokeforge.cli.commands import local_backend

    try:
        return _follow_with(local_backend(None), operation_id)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
