"""The `brokeforge` command: a thin shell over servers, packages and lifecycle."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

logger = logging.getLogger("brokeforge.cli")

#: The action commands, each with the other words it answers to.
ACTION_COMMANDS = {
    "install": ("create", "add", "provision", "deploy"),
    "update": (),
    "remove": ("drop", "delete", "forget"),
    "retry": (),
}
WAIT_POLL_SECONDS = 0.5
NO_WORKER_HINT_SECONDS = 3
LONG_RUNNING = {"serve", "web", "worker"}
MAX_KEY_BYTES = 64 * 1024


class CommandError(Exception):
    """A failure to report on stderr with a non-zero exit, without a traceback."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # A kind's own options (--engine, --name, ...) are only known once the
    # registry is loaded: the action commands check them themselves.
    if extra and getattr(args, "handler", None) is not _cmd_action:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.kind_options = extra
    # The database, its WAL files and the secrets are for this user alone,
    # whatever the data directory's own mode.
    os.umask(0o077)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "brokeforge.settings")
    if args.command not in LONG_RUNNING and not args.verbose:
        # A one-shot command prints its own results; the log is for -v.
        os.environ.setdefault("BROKEFORGE_LOG_LEVEL", "WARNING")
    try:
        result: int = args.handler(args)
        return result
    except KeyboardInterrupt:
        return 130
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brokeforge",
        description="A self-hosted server control panel.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print the log on stderr"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the web app and workers")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=_positive_int, default=2)
    serve.set_defaults(handler=_lazy("brokeforge.supervisor", "serve"))

    web = commands.add_parser("web", help="run the web app alone (no workers)")
    web.add_argument("--host", default="127.0.0.1")
    web.add_argument("--port", type=int, default=8000)
    web.set_defaults(handler=_lazy("brokeforge.supervisor", "web"))

    worker = commands.add_parser(
        "worker", help="run a worker process (or several, supervised)"
    )
    worker.add_argument(
        "--processes",
        type=_positive_int,
        default=1,
        help="run this many worker processes under a supervisor that fails a "
        "dead one's operation at once and restarts it",
    )
    worker.set_defaults(handler=_lazy("brokeforge.supervisor", "worker"))

    createuser = commands.add_parser("createuser", help="create an account")
    createuser.add_argument("username")
    createuser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input instead of prompting",
    )
    createuser.set_defaults(handler=_cmd_createuser)

    server = commands.add_parser("server", help="add, list and check servers")
    server_commands = server.add_subparsers(dest="server_command", required=True)
    add = server_commands.add_parser("add", help="register a server")
    add.add_argument("name")
    add.add_argument("--host", required=True)
    add.add_argument("--port", type=int, default=22)
    add.add_argument("--user", default="root")
    add.add_argument(
        "--key",
        metavar="FILE",
        help="an existing private key file (default: generate an ed25519 key)",
    )
    add.set_defaults(handler=_cmd_server_add)
    check = server_commands.add_parser(
        "check", help="connect, pin the host key and print its fingerprint"
    )
    check.add_argument("name")
    check.add_argument(
        "--repin",
        action="store_true",
        help="forget the pinned host key and pin the one the server shows now "
        "(after a reinstall; compare the fingerprint first)",
    )
    check.set_defaults(handler=_cmd_server_check)
    remove = server_commands.add_parser(
        "remove", help="forget a server and its records (nothing runs on it)"
    )
    remove.add_argument("name")
    remove.set_defaults(handler=_cmd_server_remove)
    listing = server_commands.add_parser("list", help="list servers")
    listing.set_defaults(handler=_cmd_server_list)

    for action, aliases in ACTION_COMMANDS.items():
        sub = commands.add_parser(
            action,
            aliases=list(aliases),
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
        if action == "install":
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
        sub.set_defaults(handler=_cmd_action, action=action)

    kinds = commands.add_parser("kinds", help="every package kind and its options")
    kinds.set_defaults(handler=_cmd_kinds)

    status = commands.add_parser("status", help="every record and its status")
    status.add_argument("--server", metavar="NAME")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_cmd_status)

    cancel = commands.add_parser("cancel", help="cancel a queued or running operation")
    cancel.add_argument("operation_id", type=int)
    cancel.add_argument(
        "--wait", action="store_true", help="wait until the operation has ended"
    )
    cancel.set_defaults(handler=_cmd_cancel)

    log = commands.add_parser("log", help="print an operation's output")
    log.add_argument("operation_id", type=int)
    log.set_defaults(handler=_cmd_log)

    metrics = commands.add_parser("metrics", help="monitoring samples")
    metrics_commands = metrics.add_subparsers(dest="metrics_command", required=True)
    collect = metrics_commands.add_parser(
        "collect", help="read new samples from servers with monitoring active"
    )
    collect.add_argument("--server", metavar="NAME")
    collect.set_defaults(handler=_cmd_metrics_collect)
    return parser


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


def _lazy(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        from importlib import import_module

        result: int = getattr(import_module(module), name)(args)
        return result

    return handler


def _setup() -> None:
    from brokeforge.home import setup_django

    setup_django()


def _get_server(name: str) -> Any:
    from brokeforge.servers.models import Server

    try:
        return Server.objects.get(name=name)
    except Server.DoesNotExist:
        raise CommandError(
            f"no server named {name!r} (see: brokeforge server list)"
        ) from None


def _cmd_createuser(args: argparse.Namespace) -> int:
    _setup()
    from django.contrib.auth import get_user_model, password_validation
    from django.core.exceptions import ValidationError

    users = get_user_model()
    try:
        users.username_validator(args.username)
    except ValidationError as exc:
        raise CommandError(" ".join(exc.messages)) from None
    try:
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass("Password: ")
            if password != getpass.getpass("Password (again): "):
                raise CommandError("the passwords differ")
    except EOFError:
        raise CommandError(
            "no password given (use --password-stdin to pipe one in)"
        ) from None
    if users.objects.filter(username=args.username).exists():
        raise CommandError(f"an account named {args.username!r} exists already")
    try:
        password_validation.validate_password(password)
    except ValidationError as exc:
        raise CommandError(" ".join(exc.messages)) from None
    users.objects.create_superuser(username=args.username, password=password)
    print(f"created account {args.username}")
    return 0


def _cmd_server_add(args: argparse.Namespace) -> int:
    _setup()
    from django.core.exceptions import ValidationError
    from django.db import IntegrityError

    from brokeforge.servers.service import add_server

    key_text = None
    if args.key:
        try:
            with open(args.key, "rb") as f:
                key_text = f.read(MAX_KEY_BYTES + 1).decode()
        except OSError as exc:
            raise CommandError(f"cannot read {args.key}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise CommandError(f"{args.key} is not a private key file") from None
        if len(key_text) > MAX_KEY_BYTES:
            raise CommandError(f"{args.key} is too large to be a private key")
    try:
        server = add_server(
            args.name, args.host, port=args.port, user=args.user, private_key=key_text
        )
    except ValidationError as exc:
        raise CommandError(_validation_text(exc)) from None
    except IntegrityError:
        raise CommandError(f"a server named {args.name!r} exists already") from None
    print(f"added server {server.name} ({server.user}@{server.address})")
    if key_text is None:
        print(f"Add this line to ~{server.user}/.ssh/authorized_keys on the server:")
    else:
        print("Its public key:")
    print(server.public_key)
    print(f"Then run: brokeforge server check {server.name}")
    return 0


def _cmd_server_check(args: argparse.Namespace) -> int:
    _setup()
    from brokeforge.lifecycle.errors import OperationFailure
    from brokeforge.servers.service import check_server

    server = _get_server(args.name)
    previous = server.host_key_fingerprint
    try:
        fingerprint = check_server(server, repin=args.repin)
    except OperationFailure as exc:
        raise CommandError(exc.message) from None
    print(f"connected to {server.name} ({server.address}); host key {fingerprint}")
    if args.repin and previous and previous != fingerprint:
        print(f"the pinned host key changed from {previous} to {fingerprint}")
    return 0


def _cmd_server_remove(args: argparse.Namespace) -> int:
    _setup()
    from brokeforge.lifecycle.errors import ActionRefused
    from brokeforge.servers.service import remove_server

    server = _get_server(args.name)
    try:
        remove_server(server)
    except ActionRefused as exc:
        raise CommandError(str(exc)) from None
    print(f"removed server {args.name} from BrokeForge; nothing was changed on it")
    return 0


def _cmd_server_list(args: argparse.Namespace) -> int:
    _setup()
    from brokeforge.servers.models import Server

    for server in Server.objects.all():
        pinned = server.host_key_fingerprint or "host key not pinned yet"
        print(f"{server.name}\t{server.user}@{server.address}\t{pinned}")
    return 0


def _cmd_action(args: argparse.Namespace) -> int:
    _setup()
    from brokeforge.lifecycle.errors import ActionRefused
    from brokeforge.packages.registry import get_kind
    from brokeforge.packages.service import request_action

    try:
        kind = get_kind(args.kind)
    except ActionRefused as exc:
        raise CommandError(str(exc)) from None
    server = _get_server(args.server)
    params = _kind_params(kind, args)
    try:
        operation = request_action(
            server,
            kind.name,
            args.action,
            params=params or None,
            record_id=getattr(args, "record_id", None),
        )
    except ActionRefused as exc:
        raise CommandError(str(exc)) from None
    print(
        f"operation {operation.pk}: {kind.verb(operation.action)} "
        f"{operation.record_label} (attempt {operation.attempt}) queued"
    )
    secret_fields = [f.name for f in kind.fields if f.secret]
    if args.action == "install" and secret_fields:
        _print_generated_secret(kind, operation, params, secret_fields)
    if not args.wait:
        return 0
    return _follow(operation.pk)


def _print_generated_secret(
    kind: Any, operation: Any, params: dict[str, Any], secret_fields: list[str]
) -> None:
    """Show a password BrokeForge generated, once, to the person who asked."""
    if any(params.get(name) for name in secret_fields):
        return
    record = kind.records().filter(pk=operation.record_id).first()
    secret = kind.secret(record) if record is not None else ""
    if secret:
        print(f"generated password (shown once here; keep it): {secret}")


def _kind_params(kind: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The kind's own options from the command line (and a password on stdin)."""
    action = args.action  # the action the command stands for, whatever its alias
    fields = []
    if action == "install" and kind.many:
        fields = list(kind.fields)
    elif action == "update":
        fields = list(kind.update_fields)
    elif action == "remove":
        fields = [f for f in kind.remove_fields if f.name != "data"]
    parser = argparse.ArgumentParser(
        prog=f"brokeforge {args.action} {kind.name}", add_help=False
    )
    for field in fields:
        flag = "--" + field.name.replace("_", "-")
        if field.boolean:
            parser.add_argument(
                flag, dest=field.name, action=argparse.BooleanOptionalAction
            )
        elif not field.secret:
            parser.add_argument(flag, dest=field.name)
    try:
        known, unknown = parser.parse_known_args(args.kind_options)
    except SystemExit:
        raise CommandError(f"bad options for {kind.name}") from None
    if unknown:
        hint = " ".join("--" + f.name.replace("_", "-") for f in fields if not f.secret)
        raise CommandError(
            f"unknown option for {args.command} {kind.name}: {' '.join(unknown)}"
            + (f" (it takes {hint})" if hint else "")
        )
    params: dict[str, Any] = {
        name: value for name, value in vars(known).items() if value is not None
    }
    if action == "remove" and getattr(args, "data", None):
        params["data"] = args.data
    secret = next((f for f in fields if f.secret), None)
    if secret is not None and getattr(args, "password_stdin", False):
        params[secret.name] = sys.stdin.readline().rstrip("\n")
    return params


def _cmd_kinds(args: argparse.Namespace) -> int:
    _setup()
    from brokeforge.packages.registry import KINDS

    for kind in KINDS.values():
        many = "many per server" if kind.many else "one per server"
        print(f"{kind.name}\t{kind.label} ({kind.family}, {many})")
        for field in kind.fields if kind.many else ():
            if field.secret:
                option = "--password-stdin"
            else:
                option = "--" + field.name.replace("_", "-")
            need = "required" if field.required else "optional"
            print(
                f"    {option}\t{field.label} ({need}){': ' if field.help else ''}"
                f"{field.help}"
            )
    return 0


def _follow(operation_id: int) -> int:
    """Print an operation's output as it grows; exit status says how it ended."""
    from brokeforge.lifecycle.models import Operation, OperationState
    from brokeforge.lifecycle.waiting import waiting_reason

    printed = 0  # position in the whole output stream, not in the stored tail
    started = time.monotonic()
    hinted: str | None = None
    while True:
        operation = Operation.objects.get(pk=operation_id)
        end = operation.output_dropped + len(operation.output)
        if end > printed:
            if printed < operation.output_dropped:
                skipped = operation.output_dropped - printed
                print(f"[... {skipped} characters of output skipped ...]")
                printed = operation.output_dropped
            sys.stdout.write(operation.output[printed - operation.output_dropped :])
            sys.stdout.flush()
            printed = end
        if operation.is_finished:
            break
        waited = time.monotonic() - started
        if waited > NO_WORKER_HINT_SECONDS:
            reason = waiting_reason(operation)
            if reason and reason != hinted:
                print(f"[{reason}]", file=sys.stderr)
                hinted = reason
        time.sleep(WAIT_POLL_SECONDS)
    print(f"operation {operation.pk} {operation.state}")
    if operation.state != OperationState.SUCCEEDED:
        print(f"error: {operation.error_message}", file=sys.stderr)
        return 1
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    _setup()
    from brokeforge.lifecycle.waiting import waiting_reason
    from brokeforge.packages.registry import get_kind
    from brokeforge.packages.service import all_records

    server = _get_server(args.server) if args.server else None
    records = sorted(
        all_records(server), key=lambda r: (r.server.name, r.kind_name(), r.pk)
    )
    rows: list[dict[str, Any]] = []
    for r in records:
        operation = r.current_operation()
        rows.append(
            {
                "server": r.server.name,
                "kind": r.kind_name(),
                "id": r.pk,
                "label": r.label(),
                "status": r.status,
                "version": str(getattr(r, "version", "") or ""),
                "error": r.error_message,
                "operation": operation.pk if operation else None,
                "waiting": waiting_reason(operation)
                if operation and not operation.is_finished
                else None,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no records yet (try: brokeforge install redis --server NAME)")
    for row in rows:
        what = row["kind"]
        if get_kind(row["kind"]).many:
            what += f" #{row['id']} ({row['label']})"
        line = f"{row['server']}\t{what}\t{row['status']}"
        if row["waiting"]:
            line += f"\t({row['waiting']})"
        if row["error"]:
            line += "\t" + " | ".join(row["error"].splitlines())
        print(line)
    return 0


def _cmd_cancel(args: argparse.Namespace) -> int:
    _setup()
    from brokeforge.lifecycle import machine
    from brokeforge.lifecycle.errors import ActionRefused
    from brokeforge.lifecycle.models import Operation

    operation = Operation.objects.filter(pk=args.operation_id).first()
    if operation is None:
        raise CommandError(f"no operation {args.operation_id}")
    try:
        operation = machine.cancel(operation)
    except ActionRefused as exc:
        raise CommandError(str(exc)) from None
    if operation.is_finished:
        print(f"operation {operation.pk} {operation.state}: {operation.error_message}")
        return 0
    print(f"operation {operation.pk}: cancel requested; its worker is stopping it")
    if not args.wait:
        return 0
    _follow(operation.pk)
    return 0


def _cmd_log(args: argparse.Namespace) -> int:
    _setup()
    from brokeforge.lifecycle.models import Operation

    operation = Operation.objects.filter(pk=args.operation_id).first()
    if operation is None:
        raise CommandError(f"no operation {args.operation_id}")
    if operation.output_dropped:
        print(f"[... first {operation.output_dropped} characters not kept ...]")
    sys.stdout.write(operation.output)
    print(f"\noperation {operation.pk} {operation.state} {operation.error_message}")
    return 0


def _cmd_metrics_collect(args: argparse.Namespace) -> int:
    """Read every active monitor's samples; exit 1 if any server failed."""
    _setup()
    from brokeforge.lifecycle.errors import OperationFailure
    from brokeforge.lifecycle.models import RecordStatus
    from brokeforge.packages.models import Monitor
    from brokeforge.packages.monitoring import collect

    monitors = Monitor.objects.select_related("server").filter(
        status=RecordStatus.ACTIVE
    )
    if args.server:
        monitors = monitors.filter(server=_get_server(args.server))
    failed = 0
    for monitor in monitors:
        try:
            new = collect(monitor.server)
        except OperationFailure as exc:
            failed += 1
            print(f"{monitor.server.name}: {exc}", file=sys.stderr)
        else:
            print(f"{monitor.server.name}: {new} new samples")
    return 1 if failed else 0


def _validation_text(exc: Any) -> str:
    if hasattr(exc, "message_dict"):
        return "; ".join(
            f"{field}: {' '.join(messages)}"
            for field, messages in exc.message_dict.items()
        )
    return " ".join(exc.messages)
