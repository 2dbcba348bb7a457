"""Adding servers and checking connections: shared by the pages and the CLI."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from brokeforge.accounts import audit
from brokeforge.accounts.actor import Actor
from brokeforge.lifecycle.errors import ActionRefused, OperationFailure
from brokeforge.servers import access
from brokeforge.servers.keys import fingerprint, generate_key_pair, import_private_key
from brokeforge.servers.models import Server
from brokeforge.servers.ssh import CommandFailed, HostKeyChanged, SSHSession


def add_server(
    name: str,
    host: str,
    *,
    port: int = 22,
    user: str = "root",
    private_key: str | None = None,
    owner: Any = None,
    actor: Actor | None = None,
) -> Server:
    """Create a server with the given private key, or a freshly generated one.

    The owner is `owner`, else the actor's account. Raises `ValidationError`
    (nothing saved) for a bad name, host, port, user or key, and for a name
    taken already. The public key to authorize is `server.public_key`.
    """
    if owner is None and actor is not None:
        owner = actor.user
    server = Server(name=name, host=host, port=port, user=user, owner=owner)
    if private_key is None:
        private, public = generate_key_pair()
    else:
        try:
            private, public = import_private_key(private_key)
        except ValueError as exc:
            raise ValidationError({"private_key": str(exc)}) from None
    server.set_private_key(private, public)
    server.full_clean()
    try:
        with transaction.atomic():
            server.save()
    except IntegrityError:
        raise ValidationError(
            {"name": f"a server named {name!r} exists already"}
        ) from None
    audit.record(actor, "server.add", server=server, target=server.name)
    return server


def adopt_ownerless_servers(user: Any) -> int:
    """Give servers registered before any account existed to `user`."""
    return Server.objects.filter(owner__isnull=True).update(owner=user)


#: What `change_server` may change.
CHANGEABLE_FIELDS = ("name", "host", "port", "user")


def change_server(
    server: Server, changes: dict[str, Any], *, actor: Actor | None = None
) -> Server:
    """Rename a server or change how it is reached.

    The pinned host key stays: if the new address presents another key, the
    next connection is refused as "host key changed" until a repin. Refused
    (`ActionRefused`) while an operation on the server is unfinished; a bad
    value raises `ValidationError` naming the field, and nothing is saved.
    """
    from brokeforge.lifecycle.models import UNFINISHED_STATES

    unknown = set(changes) - set(CHANGEABLE_FIELDS)
    if unknown:
        field = sorted(unknown)[0]
        raise ValidationError({field: "this field cannot be changed"})
    _check_change(server, actor)
    before = {field: getattr(server, field) for field in CHANGEABLE_FIELDS}
    for field, value in changes.items():
        setattr(server, field, value)
    try:
        server.full_clean(exclude=["owner"])
        with transaction.atomic():
            busy = server.operations.filter(state__in=UNFINISHED_STATES).first()
            if busy is not None:
                raise ActionRefused(
                    f"{before['name']} has an unfinished operation ({busy}); "
                    "change it once that ends"
                )
            server.save(update_fields=list(changes))
    except (ValidationError, ActionRefused, IntegrityError) as exc:
        for field, value in before.items():
            setattr(server, field, value)
        if isinstance(exc, ActionRefused):
            _refused(actor, "server.change", server, exc)
        if isinstance(exc, IntegrityError):
            raise ValidationError(
                {"name": f"a server named {changes.get('name')!r} exists already"}
            ) from None
        raise
    described = ", ".join(
        f"{f} {before[f]} -> {getattr(server, f)}"
        for f in changes
        if before[f] != getattr(server, f)
    )
    audit.record(
        actor, "server.change", server=server, target=server.name, detail=described
    )
    return server


def remove_server(server: Server, *, actor: Actor | None = None) -> None:
    """Forget a server and its records; refused while an operation is unfinished."""
    from brokeforge.lifecycle.models import UNFINISHED_STATES

    _check_change(server, actor)
    name = server.name
    try:
        with transaction.atomic():
            busy = server.operations.filter(state__in=UNFINISHED_STATES).first()
            if busy is not None:
                raise ActionRefused(
                    f"{name} has an unfinished operation ({busy}); "
                    "wait for it to end first"
                )
            server.delete()
    except ActionRefused as exc:
        _refused(actor, "server.remove", server, exc)
        raise
    audit.record(actor, "server.remove", target=name, detail=f"server {name}")


def _refused(
    actor: Actor | None, action: str, server: Server, exc: ActionRefused
) -> None:
    # Written after the refused transaction rolled back, so it stays.
    audit.record(
        actor,
        action,
        server=server,
        target=server.name,
        outcome="refused",
        detail=str(exc),
    )


def _check_change(server: Server, actor: Actor | None) -> None:
    if actor is not None:
        access.check_can_change(actor.user, server)


def check_server(
    server: Server, *, repin: bool = False, actor: Actor | None = None
) -> str:
    """Connect, pin the host key if none is pinned, and return its fingerprint.

    With `repin`, the pinned key is forgotten first and the key the server
    presents now is pinned: the way back after a server was reinstalled.

    Raises the executor's `OperationFailure` subclasses with their reasons
    (connection refused, authentication refused, host key changed, ...).
    """
    _check_change(server, actor)
    action = "server.repin" if repin else "server.check"
    try:
        fingerprint_now = _connect_and_pin(server, repin)
    except OperationFailure as exc:
        audit.record(
            actor,
            action,
            server=server,
            target=server.name,
            outcome="failed",
            detail=exc.message,
        )
        raise
    audit.record(
        actor, action, server=server, target=server.name, detail=fingerprint_now
    )
    return fingerprint_now


def _connect_and_pin(server: Server, repin: bool) -> str:
    target = server.ssh_target()
    if repin:
        # Trust what the server presents for this one connection; the old
        # pin stays until the new key is known, so a failed check loses
        # nothing.
        target = replace(target, pinned_host_key="")

    async def connect() -> str:
        async with SSHSession(
            target, connect_timeout=settings.BROKEFORGE_CONNECT_TIMEOUT
        ) as session:
            result = await session.run("true", timeout=30)
            if result.exit_status != 0:
                raise CommandFailed(
                    f"connected, but running a command failed: "
                    f"{result.stderr_tail or f'exit status {result.exit_status}'}"
                )
            return session.host_key

    host_key = asyncio.run(connect())
    if repin:
        Server.objects.filter(pk=server.pk).update(
            host_key=host_key, host_key_fingerprint=fingerprint(host_key)
        )
        server.refresh_from_db(fields=["host_key", "host_key_fingerprint"])
    elif not server.host_key:
        server.pin_host_key(host_key)
        if server.host_key != host_key:
            raise HostKeyChanged(
                f"host key changed while it was being pinned: {server.address} "
                f"presented another key than {server.host_key_fingerprint}"
            )
    return server.host_key_fingerprint
