"""Databases and their users inside MariaDB, MySQL or PostgreSQL.

A record is one database, optionally with one user that may do anything in
it. Names are plain lowercase identifiers, so they need no quoting tricks
(they are still quoted as identifiers). The password is stored encrypted and
reaches the host only inside SQL written to the script's standard input:
never on a command line, in the operation's params or in its output.
"""

# This module writes SQL for a remote client, not queries for BrokeForge's own
# database: every name in it has passed `_identifier` (lowercase letters,
# digits, underscores) and every other value goes through a *_literal quoter.
# ruff: noqa: S608

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any

from brokeforge.lifecycle.errors import ActionRefused, InvalidOption
from brokeforge.lifecycle.models import Action, ManagedRecord
from brokeforge.packages import validators
from brokeforge.packages.base import (
    Field,
    HostFacts,
    PackageKind,
    Script,
    read_db,
)
from brokeforge.packages.models import SqlDatabase
from brokeforge.packages.postgresql import PSQL
from brokeforge.servers.models import Server

ENGINES = (("mariadb", "MariaDB"), ("mysql", "MySQL"), ("postgresql", "PostgreSQL"))
ENGINE_NAMES = frozenset(name for name, _ in ENGINES)
NAME_PATTERN = re.compile(r"[a-z_][a-z0-9_]*")
MAX_NAME = 63  # PostgreSQL's limit; MySQL allows 64
MAX_USER = 32  # MySQL's limit on user names
RESERVED = frozenset(
    {
        "mysql",
        "information_schema",
        "performance_schema",
        "sys",
        "root",
        "mariadb.sys",
        "debian-sys-maint",
        "postgres",
        "template0",
        "template1",
        "public",
    }
)
MIN_PASSWORD, MAX_PASSWORD = 8, 128

# Each engine's client, as the server's administrator, reading SQL from the
# script's standard input. A failed statement fails the whole script.
CLIENTS = {
    "mariadb": "mariadb --batch --skip-column-names",
    "mysql": "mysql --batch --skip-column-names",
    "postgresql": f"{PSQL} -q -v ON_ERROR_STOP=1",
}


def _identifier(value: object, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value:
        raise ActionRefused(f"give the {what}")
    if len(value) > limit or not NAME_PATTERN.fullmatch(value):
        raise ActionRefused(
            f"{what} {value[:80]!r} is not allowed: use up to {limit} lowercase "
            "letters, digits and underscores, not starting with a digit"
        )
    if value in RESERVED:
        raise ActionRefused(f"{what} {value!r} is reserved by the database server")
    return value


def _password(value: object) -> str:
    if value in (None, ""):
        return secrets.token_urlsafe(24)
    if not isinstance(value, str) or not (MIN_PASSWORD <= len(value) <= MAX_PASSWORD):
        raise ActionRefused(
            f"a password needs {MIN_PASSWORD} to {MAX_PASSWORD} characters"
        )
    if not all("!" <= ch <= "~" for ch in value):
        raise ActionRefused(
            "a password may hold printable ASCII characters only: no spaces, "
            "line breaks or control characters"
        )
    return value


def mysql_literal(value: str) -> str:
    """A MySQL/MariaDB string literal (backslash escapes are on by default)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def pg_literal(value: str) -> str:
    """A PostgreSQL string literal (standard_conforming_strings is on)."""
    return "'" + value.replace("'", "''") + "'"


class Database(PackageKind):
    name = "database"
    label = "Database"
    family = "databases"
    model = SqlDatabase
    many = True
    uses_package_manager = False
    timeouts = {"install": 120, "update": 120, "remove": 120}
    verbs = {"install": "create", "remove": "drop"}
    fields = (
        Field("engine", "Engine", choices=ENGINES, default="mariadb"),
        Field("name", "Name", help="lowercase letters, digits and underscores"),
        Field(
            "user",
            "User",
            required=False,
            help="a user with every privilege on it; leave empty for none",
        ),
        Field(
            "password",
            "Password",
            required=False,
            secret=True,
            help="leave empty to have one generated",
        ),
    )

    def clean_params(self, action: Action, params: Mapping[str, Any]) -> dict[str, Any]:
        if action != Action.INSTALL:
            return super().clean_params(action, params)
        validators.refuse_unknown(params, {field.name for field in self.fields})
        engine = params.get("engine")
        if engine not in ENGINE_NAMES:
            raise InvalidOption(
                "engine", "choose the engine: mariadb, mysql or postgresql"
            )
        clean: dict[str, Any] = {"engine": engine, "user": ""}
        with validators.option("name"):
            clean["name"] = _identifier(params.get("name"), "database name", MAX_NAME)
        if params.get("user"):
            with validators.option("user"):
                clean["user"] = _identifier(params["user"], "user name", MAX_USER)
            with validators.option("password"):
                clean["password"] = _password(params.get("password"))
        elif params.get("password"):
            raise InvalidOption("user", "a password needs a user: give --user too")
        return clean

    def new_record(self, server: Server, clean: Mapping[str, Any]) -> ManagedRecord:
        record = SqlDatabase(
            server=server,
            engine=clean["engine"],
            name=clean["name"],
            user=clean["user"],
        )
        record.set_password(clean.get("password", ""))
        return record

    def unique_clash(
        self, server: Server, clean: Mapping[str, Any]
    ) -> ManagedRecord | None:
        same_engine = SqlDatabase.objects.filter(server=server, engine=clean["engine"])
        clash = same_engine.filter(name=clean["name"]).first()
        if clash is None and clean["user"]:
            clash = same_engine.filter(user=clean["user"]).first()
        return clash

    def identity(self, record: ManagedRecord) -> dict[str, Any]:
        assert isinstance(record, SqlDatabase)
        return {
            "id": record.pk,
            "engine": record.engine,
            "name": record.name,
            "user": record.user,
        }

    def describe(self, record: ManagedRecord) -> str:
        assert isinstance(record, SqlDatabase)
        user = f" (user {record.user})" if record.user else ""
        return f"database {record.name}{user} in {dict(ENGINES)[record.engine]}"

    def secret(self, record: ManagedRecord) -> str:
        assert isinstance(record, SqlDatabase)
        return record.password()

    def parent_kind(self, record: ManagedRecord) -> str | None:
        assert isinstance(record, SqlDatabase)
        return record.engine

    def script(
        self, action: Action, facts: HostFacts, params: Mapping[str, Any]
    ) -> str:
        engine = params["engine"]
        if action == Action.REMOVE:
            sql = self._drop_sql(engine, params["name"], params["user"])
        else:
            password = ""
            if params["user"]:
                record_id = params["id"]
                password = read_db(
                    lambda: SqlDatabase.objects.get(pk=record_id).password()
                )
            sql = self._create_sql(engine, params["name"], params["user"], password)
        check = self._check(engine, params["name"], params["user"], action)
        run_sql = f'{CLIENTS[engine]} < "$BF_INPUT"\nrm -f "$BF_INPUT"\n'
        return Script(f"cd /\n{run_sql}{check}", stdin=sql)

    def verify_script(
        self,
        action: Action,
        facts: HostFacts,
        params: Mapping[str, Any] | None = None,
    ) -> str:
        # The action script checks its own effect (see `_check`), as the
        # runner does not pass the record's params here yet.
        return "true\n"

    def _create_sql(self, engine: str, name: str, user: str, password: str) -> str:
        if engine == "postgresql":
            lines = [
                # A failing statement is logged with its text: keep the
                # password out of the server's log.
                "SET log_min_error_statement = panic;",
                "SET log_statement = 'none';",
            ]
            if user:
                lines += [
                    f"SELECT 'CREATE ROLE \"{user}\"' WHERE NOT EXISTS "
                    f"(SELECT 1 FROM pg_roles WHERE rolname = '{user}')\\gexec",
                    f'ALTER ROLE "{user}" WITH LOGIN PASSWORD {pg_literal(password)};',
                ]
            owner = f' OWNER "{user}"' if user else ""
            lines += [
                f"SELECT 'CREATE DATABASE \"{name}\"{owner}' WHERE NOT EXISTS "
                f"(SELECT 1 FROM pg_database WHERE datname = '{name}')\\gexec",
            ]
            if user:
                lines.append(f'ALTER DATABASE "{name}" OWNER TO "{user}";')
            return "\n".join(lines) + "\n"
        lines = [f"CREATE DATABASE IF NOT EXISTS `{name}`;"]
        if user:
            account = f"'{user}'@'localhost'"
            secret = mysql_literal(password)
            lines += [
                f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {secret};",
                f"ALTER USER {account} IDENTIFIED BY {secret};",
                f"GRANT ALL PRIVILEGES ON `{name}`.* TO {account};",
            ]
        return "\n".join(lines) + "\n"

    def _drop_sql(self, engine: str, name: str, user: str) -> str:
        if engine == "postgresql":
            lines = [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE);']
            if user:
                lines.append(f'DROP ROLE IF EXISTS "{user}";')
            return "\n".join(lines) + "\n"
        lines = [f"DROP DATABASE IF EXISTS `{name}`;"]
        if user:
            lines.append(f"DROP USER IF EXISTS '{user}'@'localhost';")
        return "\n".join(lines) + "\n"

    def _check(self, engine: str, name: str, user: str, action: Action) -> str:
        """Shell that asks the server whether the database (and user) exist
        as the action meant, and fails with a sentence when not."""
        if engine == "postgresql":
            query_db = f"SELECT 1 FROM pg_database WHERE datname = '{name}'"
            query_user = f"SELECT 1 FROM pg_roles WHERE rolname = '{user}'"
            client = f"{PSQL} -c"
        else:
            query_db = (
                "SELECT 1 FROM information_schema.SCHEMATA "
                f"WHERE SCHEMA_NAME = '{name}'"
            )
            query_user = (
                f"SELECT 1 FROM mysql.user WHERE User = '{user}' AND Host = 'localhost'"
            )
            client = f"{CLIENTS[engine]} -e"
        want = "" if action == Action.REMOVE else "1"
        checks = [(query_db, f"database {name}")]
        if user:
            checks.append((query_user, f"user {user}"))
        lines = []
        for query, what in checks:
            state = "is still there" if action == Action.REMOVE else "does not exist"
            lines.append(
                f'if [ "$({client} "{query}" </dev/null)" != {want!r} ]; then '
                f"echo '{what} {state} on the server after the {action}' >&2; "
                "exit 1; fi"
            )
        lines.append(f"echo 'checked: {', '.join(what for _, what in checks)}'")
        return "\n".join(lines) + "\n"
