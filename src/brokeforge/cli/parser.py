"""The `brokeforge` command line: every verb and its options."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from importlib import import_module
from typing import TypeAlias

from brokeforge.cli import commands

LONG_RUNNING = {"serve", "web", "worker"}
#: Operations a worker process runs at once unless told otherwise.
DEFAULT_CONCURRENCY = 4
MAX_CONCURRENCY = 1000
#: The action verbs, each with the other words it answers to.
ACTIONS = {
    "install": ("create", "add", "provision", "deploy"),
    "update": (),
    "remove": ("drop", "delete", "forget"),
    "retry": (),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brokeforge",
        description="A self-hosted server control panel. Exit status: 0 success, "
        "1 the operation failed, 2 usage error or refused.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print the log on stderr"
    )
    parser.add_argument(
        "--url",
        help="act on a remote BrokeForge over its API (default: $BROKEFORGE_URL; "
        "without it, on this installation's database)",
    )
    parser.add_argument(
        "--token", help="API token for --url (default: $BROKEFORGE_TOKEN)"
    )
    parser.add_argument(
        "--as",
        dest="as_user",
        metavar="NAME",
        help="locally, the account to act as (default: $BROKEFORGE_USER, "
        "else the only account)",
    )
    verbs = parser.add_subparsers(dest="command", required=True)
    _add_processes(verbs)
    _add_accounts(verbs)
    _add_servers(verbs)
    _add_actions(verbs)
    _add_reading(verbs)
    return parser


Verbs: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _json_option() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", help="print the API's JSON instead of text"
    )
    return common


def _add_processes(verbs: Verbs) -> None:
    serve = verbs.add_parser("serve", help="run the web app and workers")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    serve.add_argument(
        "--port", type=int, default=8000, help="port to listen on (default 8000)"
    )
    serve.add_argument(
        "--workers",
        type=_positive_int,
        default=2,
        metavar="N",
        help="worker processes, which run the operations (default 2)",
    )
    _add_concurrency(serve)
    serve.add_argument(
        "--web-processes",
        type=_web_processes,
        default=os.environ.get("BROKEFORGE_WEB_PROCESSES", "1"),
        metavar="N",
        help="web processes sharing the port, 1 to 32 (default 1, or "
        "$BROKEFORGE_WEB_PROCESSES); more answer more requests at once on a "
        "machine with more CPUs",
    )
    serve.set_defaults(handler=_lazy("brokeforge.supervisor", "serve"))

    web = verbs.add_parser("web", help="run the web app alone (no workers)")
    web.add_argument("--host", default="127.0.0.1")
    web.add_argument("--port", type=int, default=8000)
    # A listening socket inherited from `serve` (instead of --host/--port).
    web.add_argument("--fd", type=int, default=None, help=argparse.SUPPRESS)
    web.set_defaults(handler=_lazy("brokeforge.supervisor", "web"))

    worker = verbs.add_parser(
        "worker", help="run a worker process (or several, supervised)"
    )
    worker.add_argument(
        "--processes",
        type=_positive_int,
        default=1,
        help="run this many worker processes under a supervisor that fails a "
        "dead one's operation at once and restarts it",
    )
    _add_concurrency(worker)
    worker.set_defaults(handler=_lazy("brokeforge.supervisor", "worker"))


def _add_concurrency(verb: argparse.ArgumentParser) -> None:
    verb.add_argument(
        "--concurrency",
        type=_concurrency,
        # A string default goes through `type`: a bad variable is a clear
        # usage error of this verb only.
        default=os.environ.get("BROKEFORGE_WORKER_CONCURRENCY")
        or str(DEFAULT_CONCURRENCY),
        help="operations each worker process runs at once (default: "
        f"$BROKEFORGE_WORKER_CONCURRENCY or {DEFAULT_CONCURRENCY}); those that "
        "use one server's package manager still run one at a time",
    )


#: The most web processes `serve` starts.
MAX_WEB_PROCESSES = 32


def _count(maximum: int, flag: str, variable: str) -> Callable[[str], int]:
    """An argparse type: a whole number from 1 to `maximum`, given by `flag`
    or by the environment `variable` (its default)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if not 1 <= value <= maximum:
            raise argparse.ArgumentTypeError(
                f"must be a whole number from 1 to {maximum}, not {text!r} "
                f"(from {flag} or ${variable})"
            )
        return value

    return parse


_web_processes = _count(
    MAX_WEB_PROCESSES, "--web-processes", "BROKEFORGE_WEB_PROCESSES"
)
_concurrency = _count(MAX_CONCURRENCY, "--concurrency", "BROKEFORGE_WORKER_CONCURRENCY")


def _add_accounts(verbs: Verbs) -> None:
    createuser = verbs.add_parser("createuser", help="create an account")
    createuser.add_argument("username")
    createuser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input instead of prompting",
    )
    createuser.set_defaults(handler=commands.createuser)

    token = verbs.add_parser("token", help="personal API tokens (on this installation)")
    token_verbs = token.add_subparsers(dest="token_command", required=True)
    create = token_verbs.add_parser(
        "create", parents=[_json_option()], help="create a token; prints it once"
    )
    create.add_argument("--name", required=True)
    create.add_argument(
        "--read-only", action="store_true", help="may read but change nothing"
    )
    create.set_defaults(handler=commands.token_create)
    listing = token_verbs.add_parser(
        "list", parents=[_json_option()], help="your live tokens"
    )
    listing.set_defaults(handler=commands.token_list)
    revoke = token_verbs.add_parser("revoke", help="revoke a token by name")
    revoke.add_argument("name")
    revoke.set_defaults(handler=commands.token_revoke)


def _add_servers(verbs: Verbs) -> None:
    json = _json_option()
    server = verbs.add_parser("server", help="add, list, change and check servers")
    server_verbs = server.add_subparsers(dest="server_command", required=True)

    add = server_verbs.add_parser("add", parents=[json], help="register a server")
    add.add_argument("name")
    add.add_argument("--host", required=True)
    add.add_argument("--port", type=int, default=22)
    add.add_argument("--user", default="root")
    add.add_argument(
        "--key",
        metavar="FILE",
        help="an existing private key file (default: generate an ed25519 key)",
    )
    add.set_defaults(handler=commands.server_add)

    check = server_verbs.add_parser(
        "check",
        parents=[json],
        help="connect, pin the host key and print its fingerprint",
    )
    check.add_argument("name")
    check.add_argument(
        "--repin",
        action="store_true",
        help="forget the pinned host key and pin the one the server shows now "
        "(after a reinstall; compare the fingerprint first)",
    )
    check.set_defaults(handler=commands.server_check)

    change = server_verbs.add_parser(
        "change",
        parents=[json],
        help="rename a server or change how it is reached (the pinned key stays)",
    )
    change.add_argument("name")
    change.add_argument("--rename", metavar="NEW_NAME")
    change.add_argument("--host")
    change.add_argument("--port", type=int)
    change.add_argument("--user")
    change.set_defaults(handler=commands.server_change)

    remove = server_verbs.add_parser(
        "remove", help="forget a server and its records (nothing runs on it)"
    )
    remove.add_argument("name")
    remove.set_defaults(handler=commands.server_remove)

    show = server_verbs.add_parser("show", parents=[json], help="one server")
    show.add_argument("name")
    show.set_defaults(handler=commands.server_show)

    listing = server_verbs.add_parser("list", parents=[json], help="list servers")
    listing.set_defaults(handler=commands.server_list)


def _add_actions(verbs: Verbs) -> None:
    for action, aliases in ACTIONS.items():
        sub = verbs.add_parser(
            action,
            aliases=list(aliases),
            parents=[_json_option()],
            help=f"{action} a package or record on a server"
            + (f" ({', '.join(aliases)} are the same)" if aliases else ""),
            epilog="A kind's own options follow (see: brokeforge kinds).",
        )
        sub.add_argument("kind", help="the package kind (see: brokeforge kinds)")
        sub.add_argument("--server", required=True, metavar="NAME")
        sub.add_argument(
            "--wait",
            action="store_true",
            help="follow the operation to its end; exit 1 if it failed",
        )
        if action != "install":
            sub.add_argument(
                "--id",
                type=int,
                dest="record_id",
                help="which record, for kinds with many (see: brokeforge status)",
            )
        if action in ("install", "update"):
            sub.add_argument(
                "--password-stdin",
                action="store_true",
                help="read the kind's password option from standard input",
            )
        if action == "remove":
            data = sub.add_mutually_exclusive_group()
            data.add_argument(
                "--keep-data",
                dest="data",
                action="store_const",
                const="keep",
                help="move the data to /var/backups/brokeforge before purging",
            )
            data.add_argument(
                "--delete-data",
                dest="data",
                action="store_const",
                const="delete",
                help="delete the data with the package",
            )
        sub.set_defaults(handler=commands.act, action=action)

    kinds = verbs.add_parser(
        "kinds", parents=[_json_option()], help="every package kind and its options"
    )
    kinds.set_defaults(handler=commands.kinds)

    cancel = verbs.add_parser(
        "cancel", parents=[_json_option()], help="cancel a queued or running operation"
    )
    cancel.add_argument("operation_id", type=int)
    cancel.add_argument(
        "--wait", action="store_true", help="follow the operation until it has ended"
    )
    cancel.set_defaults(handler=commands.cancel)


def _add_reading(verbs: Verbs) -> None:
    json = _json_option()
    status = verbs.add_parser(
        "status", parents=[json], help="every record and its status"
    )
    status.add_argument("--server", metavar="NAME")
    status.set_defaults(handler=commands.status)

    operations = verbs.add_parser(
        "operations", parents=[json], help="the latest operations"
    )
    operations.add_argument("--server", metavar="NAME")
    operations.add_argument("--limit", type=_positive_int, default=20)
    operations.set_defaults(handler=commands.operations)

    operation = verbs.add_parser("operation", parents=[json], help="one operation")
    operation.add_argument("operation_id", type=int)
    operation.set_defaults(handler=commands.operation)

    log = verbs.add_parser("log", parents=[json], help="print an operation's output")
    log.add_argument("operation_id", type=int)
    log.add_argument(
        "--offset", type=int, default=0, help="start at this position of the output"
    )
    log.add_argument(
        "--wait", action="store_true", help="keep following until the operation ends"
    )
    log.set_defaults(handler=commands.log)

    audit = verbs.add_parser("audit", parents=[json], help="who did what, newest first")
    audit.add_argument("--server", metavar="NAME")
    audit.add_argument("--limit", type=_positive_int, default=50)
    audit.set_defaults(handler=commands.audit)

    metrics = verbs.add_parser("metrics", help="monitoring samples")
    metrics_verbs = metrics.add_subparsers(dest="metrics_command", required=True)
    collect = metrics_verbs.add_parser(
        "collect", help="read new samples from servers with monitoring active"
    )
    collect.add_argument("--server", metavar="NAME")
    collect.set_defaults(handler=commands.metrics_collect)


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


def _lazy(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        result: int = getattr(import_module(module), name)(args)
        return result

    return handler
