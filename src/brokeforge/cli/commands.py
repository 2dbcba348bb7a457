"""One function per `brokeforge` verb: parse, call a backend, print.

Nothing here imports Django at module level: with --url the command never
touches the local installation.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from typing import Any

from brokeforge.cli.backends import (
    EXIT_FAILED,
    JSON,
    Backend,
    CommandError,
    RemoteBackend,
)

WAIT_POLL_SECONDS = 0.5
#: After this long, say what an unfinished operation waits for (and again
#: whenever that changes).
WAITING_HINT_SECONDS = 3
MAX_KEY_BYTES = 64 * 1024


def backend(args: argparse.Namespace) -> Backend:
    url = args.url or os.environ.get("BROKEFORGE_URL")
    if url:
        return RemoteBackend(url, args.token or os.environ.get("BROKEFORGE_TOKEN", ""))
    return local_backend(args.as_user)


def local_backend(as_user: str | None) -> Backend:
    _setup()
    from brokeforge.cli.local import LocalBackend, account

    return LocalBackend(account(as_user))


def _setup() -> None:
    from django.apps import apps

    from brokeforge.home import setup_django

    if not apps.ready:  # already set up when called in-process (tests)
        setup_django()


def _local_only(args: argparse.Namespace, what: str) -> None:
    if args.url or os.environ.get("BROKEFORGE_URL"):
        raise CommandError(f"{what} works on this installation only, not with --url")


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


# -- accounts and tokens -------------------------------------------------------


def createuser(args: argparse.Namespace) -> int:
    _local_only(args, "createuser")
    _setup()
    from django.contrib.auth import get_user_model, password_validation
    from django.core.exceptions import ValidationError

    from brokeforge.accounts import audit
    from brokeforge.accounts.actor import Actor
    from brokeforge.servers.service import adopt_ownerless_servers

    users = get_user_model()
    try:
        users.username_validator(args.username)
    except ValidationError as exc:
        raise CommandError(" ".join(exc.messages)) from None
    password = _read_password(args.password_stdin)
    if users.objects.filter(username=args.username).exists():
        raise CommandError(f"an account named {args.username!r} exists already")
    try:
        password_validation.validate_password(password)
    except ValidationError as exc:
        raise CommandError(" ".join(exc.messages)) from None
    first = not users.objects.exists()
    user = users.objects.create_superuser(username=args.username, password=password)
    audit.record(Actor.local(user), "account.create", target=args.username)
    print(f"created account {args.username}")
    if first and (adopted := adopt_ownerless_servers(user)):
        print(f"it owns the {adopted} server(s) registered before any account")
    return 0


def _read_password(from_stdin: bool) -> str:
    try:
        if from_stdin:
            return sys.stdin.readline().rstrip("\n")
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Password (again): "):
            raise CommandError("the passwords differ")
        return password
    except EOFError:
        raise CommandError(
            "no password given (use --password-stdin to pipe one in)"
        ) from None


def _token_user(args: argparse.Namespace) -> Any:
    _local_only(args, "token")
    _setup()
    from brokeforge.cli.local import account

    return account(args.as_user)


def token_create(args: argparse.Namespace) -> int:
    user = _token_user(args)
    from django.core.exceptions import ValidationError

    from brokeforge.accounts.actor import Actor
    from brokeforge.accounts.tokens import create_token
    from brokeforge.cli.local import validation_text

    try:
        token, secret = create_token(
            user, args.name, read_only=args.read_only, actor=Actor.local(user)
        )
    except ValidationError as exc:
        raise CommandError(validation_text(exc)) from None
    if args.json:
        _print_json({"name": token.name, "scope": token.scope, "token": secret})
        return 0
    print(f"created {token.scope} token {token.name} for {user.get_username()}")
    print("Copy it now; it is not shown again:")
    print(secret)
    return 0


def token_list(args: argparse.Namespace) -> int:
    user = _token_user(args)
    from brokeforge.accounts.tokens import live_tokens

    rows = [
        {
            "name": t.name,
            "prefix": t.prefix,
            "scope": t.scope,
            "created_at": t.created_at.isoformat(),
            "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
            "last_used_from": t.last_used_from or None,
        }
        for t in live_tokens(user)
    ]
    if args.json:
        _print_json(rows)
        return 0
    for row in rows:
        used = row["last_used_at"] or "never used"
        print(f"{row['name']}\t{row['prefix']}…\t{row['scope']}\t{used}")
    return 0


def token_revoke(args: argparse.Namespace) -> int:
    user = _token_user(args)
    from brokeforge.accounts.actor import Actor
    from brokeforge.accounts.models import ApiToken
    from brokeforge.accounts.tokens import revoke_token

    token = ApiToken.objects.filter(
        user=user, name=args.name, revoked_at__isnull=True
    ).first()
    if token is None:
        raise CommandError(f"you have no live token named {args.name!r}")
    revoke_token(token, actor=Actor.local(user))
    print(f"revoked token {token.name}")
    return 0


# -- servers -------------------------------------------------------------------


def server_add(args: argparse.Namespace) -> int:
    key_text = _read_key(args.key) if args.key else None
    fields = {
        "name": args.name,
        "host": args.host,
        "port": args.port,
        "user": args.user,
        "private_key": key_text,
    }
    server = backend(args).add_server(fields)
    if args.json:
        _print_json(server)
        return 0
    print(f"added server {server['name']} ({server['user']}@{_address(server)})")
    if key_text is None:
        print(f"Add this line to ~{server['user']}/.ssh/authorized_keys on the server:")
    else:
        print("Its public key:")
    print(server["public_key"])
    print(f"Then run: brokeforge server check {server['name']}")
    return 0


def _read_key(path: str) -> str:
    try:
        with open(path, "rb") as f:
            key_text = f.read(MAX_KEY_BYTES + 1).decode()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CommandError(f"{path} is not a private key file") from None
    if len(key_text) > MAX_KEY_BYTES:
        raise CommandError(f"{path} is too large to be a private key")
    return key_text


def _address(server: JSON) -> str:
    return f"{server['host']}:{server['port']}"


def server_check(args: argparse.Namespace) -> int:
    chosen = backend(args)
    previous = chosen.server(args.name)["host_key_fingerprint"]
    result = chosen.check_server(args.name, args.repin)
    if args.json:
        _print_json(result)
    elif result["ok"]:
        server = result["server"]
        fingerprint = result["host_key_fingerprint"]
        where = f"{server['name']} ({_address(server)})"
        print(f"connected to {where}; host key {fingerprint}")
        if args.repin and previous and previous != fingerprint:
            print(f"the pinned host key changed from {previous} to {fingerprint}")
    else:
        print(f"error: {result['error_message']}", file=sys.stderr)
    return 0 if result["ok"] else EXIT_FAILED


def server_change(args: argparse.Namespace) -> int:
    changes = {
        field: value
        for field, value in (
            ("name", args.rename),
            ("host", args.host),
            ("port", args.port),
            ("user", args.user),
        )
        if value is not None
    }
    if not changes:
        raise CommandError("say what to change: --rename, --host, --port or --user")
    server = backend(args).change_server(args.name, changes)
    if args.json:
        _print_json(server)
    else:
        print(f"changed server {server['name']} ({server['user']}@{_address(server)})")
    return 0


def server_remove(args: argparse.Namespace) -> int:
    backend(args).remove_server(args.name)
    print(f"removed server {args.name} from BrokeForge; nothing was changed on it")
    return 0


def server_show(args: argparse.Namespace) -> int:
    server = backend(args).server(args.name)
    if args.json:
        _print_json(server)
        return 0
    for field in ("name", "host", "port", "user", "owner", "host_key_fingerprint"):
        print(f"{field}: {server[field] if server[field] is not None else ''}")
    print(f"public_key: {server['public_key']}")
    return 0


def server_list(args: argparse.Namespace) -> int:
    servers = backend(args).list_servers()
    if args.json:
        _print_json(servers)
        return 0
    for server in servers:
        pinned = server["host_key_fingerprint"] or "host key not pinned yet"
        print(f"{server['name']}\t{server['user']}@{_address(server)}\t{pinned}")
    return 0


# -- actions on records and operations -----------------------------------------


def act(args: argparse.Namespace) -> int:
    chosen = backend(args)
    kind = _kind(chosen, args.kind)
    params = _kind_params(kind, args)
    record_id = getattr(args, "record_id", None)
    record = chosen.act(args.server, kind["name"], args.action, params, record_id)
    operation = record["operation"]
    if args.json:
        if args.wait:
            return _wait_quietly(chosen, operation["id"])
        _print_json(record)
        return 0
    verb = kind["verbs"].get(operation["action"], operation["action"])
    print(
        f"operation {operation['id']}: {verb} {operation['record']} "
        f"(attempt {operation['attempt']}) {operation['state']}"
    )
    if record.get("generated_secret"):
        secret = record["generated_secret"]
        print(f"generated password (shown once here; keep it): {secret}")
    if not args.wait:
        return 0
    return follow(chosen, operation["id"])


def _kind(chosen: Backend, name: str) -> JSON:
    kinds = {k["name"]: k for k in chosen.kinds()}
    if name not in kinds:
        known = ", ".join(sorted(kinds))
        raise CommandError(f"unknown package kind {name!r}: choose one of {known}")
    return kinds[name]


def _kind_params(kind: JSON, args: argparse.Namespace) -> JSON:
    """The kind's own options from the command line (and a password on stdin)."""
    fields: list[JSON] = []
    if args.action == "install" and kind["many"]:
        fields = kind["fields"]
    elif args.action == "update":
        fields = kind["update_fields"]
    elif args.action == "remove":
        fields = [f for f in kind["remove_fields"] if f["name"] != "data"]
    parser = argparse.ArgumentParser(
        prog=f"brokeforge {args.action} {kind['name']}", add_help=False
    )
    for field in fields:
        flag = "--" + field["name"].replace("_", "-")
        if field["boolean"]:
            parser.add_argument(
                flag, dest=field["name"], action=argparse.BooleanOptionalAction
            )
        elif not field["secret"]:
            parser.add_argument(flag, dest=field["name"])
    try:
        known, unknown = parser.parse_known_args(args.kind_options)
    except SystemExit:
        raise CommandError(f"bad options for {kind['name']}") from None
    if unknown:
        takes = " ".join(_flag(f) for f in fields if not f["secret"])
        raise CommandError(
            f"unknown option for {args.command} {kind['name']}: {' '.join(unknown)}"
            + (f" (it takes {takes})" if takes else "")
        )
    params = {name: value for name, value in vars(known).items() if value is not None}
    if args.action == "remove" and getattr(args, "data", None):
        params["data"] = args.data
    secret = next((f for f in fields if f["secret"]), None)
    if secret is not None and getattr(args, "password_stdin", False):
        params[secret["name"]] = sys.stdin.readline().rstrip("\n")
    return params


def _flag(field: JSON) -> str:
    if field["secret"]:
        return "--password-stdin"
    return "--" + str(field["name"]).replace("_", "-")


def kinds(args: argparse.Namespace) -> int:
    if args.url or os.environ.get("BROKEFORGE_URL"):
        found = backend(args).kinds()
    else:
        # Listing kinds needs no account: it reads no one's servers.
        _setup()
        from brokeforge.api.kinds import kind_dict
        from brokeforge.packages.registry import KINDS

        found = [kind_dict(kind) for kind in KINDS.values()]
    if args.json:
        _print_json(found)
        return 0
    for kind in found:
        many = "many per server" if kind["many"] else "one per server"
        print(f"{kind['name']}\t{kind['label']} ({kind['family']}, {many})")
        created = kind["fields"] if kind["many"] else []
        updated = {f["name"] for f in kind["update_fields"]}
        options = [
            (f, ", also on update" if f["name"] in updated else "") for f in created
        ]
        named = {f["name"] for f in created}
        options += [
            (f, ", on update") for f in kind["update_fields"] if f["name"] not in named
        ]
        for field, when in options:
            need = "required" if field["required"] else "optional"
            help_text = f": {field['help']}" if field["help"] else ""
            print(f"    {_flag(field)}\t{field['label']} ({need}{when}){help_text}")
    return 0


def cancel(args: argparse.Namespace) -> int:
    chosen = backend(args)
    operation = chosen.cancel(args.operation_id)
    if args.json and not args.wait:
        _print_json(operation)
        return 0
    if args.json:
        return _wait_quietly(chosen, args.operation_id)
    if operation["state"] in ("queued", "running"):
        print(f"operation {operation['id']}: cancel requested; its worker stops it")
        if args.wait:
            follow(chosen, args.operation_id, offset=operation["output_length"])
        return 0
    state, error = operation["state"], operation["error_message"]
    print(f"operation {operation['id']} {state}: {error}")
    return 0


def follow(chosen: Backend, operation_id: int, *, offset: int = 0) -> int:
    """Print an operation's output as it grows; exit status says how it ended."""
    started = time.monotonic()
    hinted: str | None = None
    while True:
        chunk = chosen.output(operation_id, offset)
        if chunk["skipped"]:
            print(f"[... {chunk['skipped']} characters of output skipped ...]")
        sys.stdout.write(chunk["text"])
        sys.stdout.flush()
        offset = chunk["next_offset"]
        if chunk["finished"]:
            break
        if time.monotonic() - started > WAITING_HINT_SECONDS:
            waiting = chosen.operation(operation_id)["waiting"]
            if waiting and waiting != hinted:
                print(f"[{waiting}]", file=sys.stderr)
                hinted = waiting
        time.sleep(WAIT_POLL_SECONDS)
    print(f"operation {operation_id} {chunk['state']}")
    if chunk["state"] != "succeeded":
        print(f"error: {chunk['error_message']}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _wait_quietly(chosen: Backend, operation_id: int) -> int:
    while not chosen.output(operation_id, 2**62)["finished"]:
        time.sleep(WAIT_POLL_SECONDS)
    operation = chosen.operation(operation_id)
    _print_json(operation)
    return 0 if operation["state"] == "succeeded" else EXIT_FAILED


# -- reading -------------------------------------------------------------------


def status(args: argparse.Namespace) -> int:
    chosen = backend(args)
    rows = sorted(
        chosen.records(args.server), key=lambda r: (r["server"], r["kind"], r["id"])
    )
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no records yet (try: brokeforge install redis --server NAME)")
    many = {k["name"] for k in chosen.kinds() if k["many"]} if rows else set()
    for row in rows:
        what = row["kind"]
        if what in many:
            what += f" #{row['id']} ({row['label']})"
        line = f"{row['server']}\t{what}\t{row['status']}"
        waiting = (row["operation"] or {}).get("waiting")
        if waiting and row["operation"]["state"] in ("queued", "running"):
            line += f"\t({waiting})"
        if row["error_message"]:
            line += "\t" + " | ".join(row["error_message"].splitlines())
        print(line)
    return 0


def operations(args: argparse.Namespace) -> int:
    rows = backend(args).operations(args.server, args.limit)
    if args.json:
        _print_json(rows)
        return 0
    for op in rows:
        line = (
            f"{op['id']}\t{op['state']}\t{op['action']} {op['record']}"
            f"\tattempt {op['attempt']}"
        )
        if op["error_message"]:
            line += "\t" + " | ".join(op["error_message"].splitlines())
        print(line)
    return 0


def operation(args: argparse.Namespace) -> int:
    op = backend(args).operation(args.operation_id)
    if args.json:
        _print_json(op)
        return 0
    for field in (
        "id",
        "record",
        "action",
        "attempt",
        "state",
        "requested_by",
        "created_at",
        "started_at",
        "finished_at",
        "waiting",
        "error_message",
    ):
        if op[field] not in (None, ""):
            print(f"{field}: {op[field]}")
    return 0


def log(args: argparse.Namespace) -> int:
    chosen = backend(args)
    if args.wait and not args.json:
        return follow(chosen, args.operation_id, offset=args.offset)
    chunk = chosen.output(args.operation_id, max(args.offset, 0))
    if args.json:
        _print_json(chunk)
        return 0
    if chunk["skipped"]:
        print(f"[... first {chunk['offset']} characters not kept ...]")
    sys.stdout.write(chunk["text"])
    print(
        f"\noperation {chunk['operation_id']} {chunk['state']} "
        f"{chunk['error_message']}".rstrip()
    )
    return 0


def audit(args: argparse.Namespace) -> int:
    rows = backend(args).audit(args.server, args.limit)
    if args.json:
        _print_json(rows)
        return 0
    for entry in rows:
        who = entry["user"] + (f" (token {entry['token']})" if entry["token"] else "")
        line = (
            f"{entry['at']}\t{who}\t{entry['via']} {entry['address']}"
            f"\t{entry['action']}\t{entry['target']}\t{entry['outcome']}"
        )
        if entry["detail"]:
            line += ": " + " | ".join(entry["detail"].splitlines())
        print(line)
    return 0


def metrics_collect(args: argparse.Namespace) -> int:
    """Read every active monitor's samples; exit 1 if any server failed.

    A maintenance job of this installation (run on a timer), not a person's
    action: it reads every server's samples whoever owns it.
    """
    _local_only(args, "metrics collect")
    _setup()
    from brokeforge.lifecycle.errors import OperationFailure
    from brokeforge.lifecycle.models import RecordStatus
    from brokeforge.packages.models import Monitor
    from brokeforge.packages.monitoring import collect

    monitors = Monitor.objects.select_related("server").filter(
        status=RecordStatus.ACTIVE
    )
    if args.server:
        monitors = monitors.filter(server__name=args.server)
    failed = 0
    for monitor in monitors:
        try:
            new = collect(monitor.server)
        except OperationFailure as exc:
            failed += 1
            print(f"{monitor.server.name}: {exc}", file=sys.stderr)
        else:
            print(f"{monitor.server.name}: {new} new samples")
    return EXIT_FAILED if failed else 0
