"""Adding servers and checking connections: shared by the pages and the CLI."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

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
) -> Server:
    """Create a server with the given private key, or a freshly generated one.

    Raises `ValidationError` (nothing saved) for a bad name, host, port, user
    or key. The public key to authorize is `server.public_key`.
    """
    server = Server(name=name, host=host, port=port, user=user)
    if private_key is None:
        private, public = generate_key_pair()
    else:
        try:
            private, public = import_private_key(private_key)
        except ValueError as exc:
            raise ValidationError({"private_key": str(exc)}) from None
    server.set_private_key(private, public)
    server.full_clean()
    server.save()
    return server


def remove_server(server: Server) -> None:
    """Forget a server and its records; refused while an operation is unfinished."""
    from brokeforge.lifecycle.errors import ActionRefused
    from brokeforge.lifecycle.models import UNFINISHED_STATES

    with transaction.atomic():
        busy = server.operations.filter(state__in=UNFINISHED_STATES).first()
        if busy is not None:
            raise ActionRefused(
                f"{server.name} has an unfinished operation ({busy}); "
                "wait for it to end first"
            )
        server.delete()


def check_server(server: Server, *, repin: bool = False) -> str:
    """Connect, pin the host key if none is pinned, and return its fingerprint.

    With `repin`, the pinned key is forgotten first and the key the server
    presents now is pinned: the way back after a server was reinstalled.

    Raises the executor's `OperationFailure` subclasses with their reasons
    (connection refused, authentication refused, host key changed, ...).
    """
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
