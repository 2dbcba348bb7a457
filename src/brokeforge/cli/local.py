"""The CLI's local backend: the installation's own database, as one account.

It calls the same services as the pages and the API and answers with the
API's JSON shapes, so a command prints the same locally and remotely.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from pydantic import BaseModel

from brokeforge.accounts import audit
from brokeforge.accounts.actor import Actor
from brokeforge.api import schemas, serialize
from brokeforge.api.kinds import kind_dict
from brokeforge.cli.backends import JSON, CommandError
from brokeforge.lifecycle.errors import ActionRefused, OperationFailure
from brokeforge.lifecycle.models import Operation
from brokeforge.packages import service as packages
from brokeforge.packages.registry import KINDS, get_kind
from brokeforge.servers import access
from brokeforge.servers import service as servers
from brokeforge.servers.access import NotAllowed
from brokeforge.servers.models import Server


def account(name: str | None) -> Any:
    """The account the local CLI acts as: --as NAME, else the only one."""
    from django.contrib.auth import get_user_model

    users = get_user_model().objects.filter(is_active=True)
    name = name or os.environ.get("BROKEFORGE_USER") or None
    if name:
        user = users.filter(username=name).first()
        if user is None:
            raise CommandError(f"no active account named {name!r}")
        return user
    count = users.count()
    if count == 1:
        return users.get()
    if count == 0:
        raise CommandError(
            "create an account first: brokeforge createuser NAME "
            "(or open the web page once)"
        )
    raise CommandError(
        "there are several accounts: say which to act as with --as NAME "
        "(or BROKEFORGE_USER)"
    )


def dump(schema: type[BaseModel], data: Any) -> JSON:
    """The API's JSON for `data`, byte for byte the shape the API answers."""
    result: JSON = schema.model_validate(data).model_dump(mode="json")
    return result


class LocalBackend:
    def __init__(self, user: Any) -> None:
        self.user = user
        self.actor = Actor.local(user)

    def _servers(self) -> QuerySet[Server]:
        return access.visible_servers(self.user).select_related("owner")

    def _server(self, name: str) -> Server:
        server = self._servers().filter(name=name).first()
        if server is None:
            raise CommandError(
                f"no server named {name!r} (see: brokeforge server list)"
            )
        return server

    def list_servers(self) -> list[JSON]:
        return [dump(schemas.ServerOut, serialize.server(s)) for s in self._servers()]

    def server(self, name: str) -> JSON:
        return dump(schemas.ServerOut, serialize.server(self._server(name)))

    def add_server(self, fields: JSON) -> JSON:
        with _refusals():
            server = servers.add_server(
                fields["name"],
                fields["host"],
                port=fields["port"],
                user=fields["user"],
                private_key=fields.get("private_key"),
                actor=self.actor,
            )
        return dump(schemas.ServerOut, serialize.server(server))

    def change_server(self, name: str, changes: JSON) -> JSON:
        server = self._server(name)
        with _refusals():
            servers.change_server(server, changes, actor=self.actor)
        return dump(schemas.ServerOut, serialize.server(server))

    def remove_server(self, name: str) -> None:
        with _refusals():
            servers.remove_server(self._server(name), actor=self.actor)

    def check_server(self, name: str, repin: bool) -> JSON:
        server = self._server(name)
        ok, error, fingerprint = True, "", None
        with _refusals():
            try:
                fingerprint = servers.check_server(
                    server, repin=repin, actor=self.actor
                )
            except OperationFailure as exc:
                ok, error = False, exc.message
        server.refresh_from_db()
        return dump(
            schemas.CheckOut,
            {
                "ok": ok,
                "server": serialize.server(server),
                "host_key_fingerprint": fingerprint or server.host_key_fingerprint,
                "error_message": error,
            },
        )

    def records(self, server: str | None) -> list[JSON]:
        chosen = [self._server(server)] if server else list(self._servers())
        return [
            dump(schemas.RecordOut, serialize.record(record))
            for s in chosen
            for record in packages.all_records(s)
        ]

    def act(
        self,
        server: str,
        kind: str,
        action: str,
        params: JSON | None,
        record_id: int | None,
    ) -> JSON:
        target = self._server(server)
        with _refusals():
            operation = packages.request_action(
                target,
                kind,
                action,
                params=params or None,
                record_id=record_id,
                actor=self.actor,
            )
            many = get_kind(kind).many
            record = packages.get_record(
                target, kind, operation.record_id if many else None
            )
            if record is None:
                raise ActionRefused(f"{operation.record_label} was removed meanwhile")
        answer = serialize.record(record, operation)
        answer["generated_secret"] = serialize.generated_secret(record, action, params)
        return dump(schemas.RecordOut, answer)

    def kinds(self) -> list[JSON]:
        return [dump(schemas.KindOut, kind_dict(kind)) for kind in KINDS.values()]

    def _operations(self) -> QuerySet[Operation]:
        return access.visible_operations(self.user).select_related(
            "server", "requested_by"
        )

    def _operation(self, operation_id: int) -> Operation:
        operation = self._operations().filter(pk=operation_id).first()
        if operation is None:
            raise CommandError(f"no operation {operation_id}")
        return operation

    def operations(self, server: str | None, limit: int) -> list[JSON]:
        found = self._operations()
        if server:
            found = found.filter(server=self._server(server))
        return [
            dump(schemas.OperationOut, serialize.operation(op)) for op in found[:limit]
        ]

    def operation(self, operation_id: int) -> JSON:
        op = self._operation(operation_id)
        return dump(schemas.OperationOut, serialize.operation(op))

    def output(self, operation_id: int, offset: int) -> JSON:
        op = self._operation(operation_id)
        return dump(schemas.OutputOut, serialize.output(op, offset))

    def cancel(self, operation_id: int) -> JSON:
        with _refusals():
            op = packages.cancel_operation(
                self._operation(operation_id), actor=self.actor
            )
        op.refresh_from_db()
        return dump(schemas.OperationOut, serialize.operation(op))

    def audit(self, server: str | None, limit: int) -> list[JSON]:
        entries = audit.visible_entries(self.user)
        if server:
            entries = entries.filter(server=self._server(server))
        return [
            dump(schemas.AuditOut, serialize.audit_entry(e)) for e in entries[:limit]
        ]


class _refusals:
    """Turn the services' refusals into `CommandError` (exit status 2)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, ActionRefused | NotAllowed):
            raise CommandError(str(exc)) from None
        if isinstance(exc, ValidationError):
            raise CommandError(validation_text(exc)) from None


def validation_text(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return "; ".join(
            f"{field}: {' '.join(messages)}"
            for field, messages in exc.message_dict.items()
        )
    return " ".join(exc.messages)
