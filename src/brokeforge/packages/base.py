"""What every package kind declares: its record, options, scripts and checks.

A kind turns an action into shell scripts for the host it meets (see
`HostFacts`); the runner runs them over SSH. Scripts run under
`set -euo pipefail` with a non-interactive apt (see `servers.ssh.PRELUDE`),
and success is proven by a verification script that asks the host, never
assumed from an exit status.

Besides its scripts a kind says where its records live (`model`), which
family of the server page it belongs to, whether a server has one record of
it or many, which record must be `active` before one of it can be created
(`parent_kind`), and which options a person gives when creating one
(`fields`, checked by `clean_params`). `packages.service` does the rest for
every kind alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from django.db import connections, models

from brokeforge.lifecycle.errors import InvalidOption, OperationFailure
from brokeforge.lifecycle.models import Action, ManagedRecord, Operation

if TYPE_CHECKING:
    from brokeforge.servers.models import Server

T = TypeVar("T")

DEFAULT_TIMEOUT = 600

# Read the host's identity and init system in one round trip.
FACTS_SCRIPT = """\
cat /etc/os-release
if [ -d /run/systemd/system ]; then echo BROKEFORGE_INIT=systemd; \
else echo BROKEFORGE_INIT=other; fi
"""

SUPPORTED_SYSTEMS = {("debian", "12"), ("ubuntu", "22.04"), ("ubuntu", "24.04")}

#: The sections of a server's page, in the order they are shown.
FAMILIES = (
    ("databases", "Databases"),
    ("php", "PHP"),
    ("nginx", "Nginx"),
    ("firewall", "Firewall"),
    ("scheduler", "Scheduler"),
    ("supervisor", "Supervisor"),
    ("sites", "Sites"),
    ("monitoring", "Monitoring"),
)
FAMILY_NAMES = frozenset(name for name, _ in FAMILIES)

#: How a person names each action when nothing more fitting is declared.
DEFAULT_VERBS: Mapping[str, str] = {
    "install": "install",
    "update": "update",
    "remove": "remove",
    "retry": "retry",
}


class UnsupportedSystem(OperationFailure):
    reason_class = "unsupported_system"


class VerificationFailed(OperationFailure):
    reason_class = "verification_failed"


@dataclass(frozen=True)
class HostFacts:
    os_id: str
    version_id: str
    codename: str
    pretty_name: str
    has_systemd: bool

    @classmethod
    def parse(cls, text: str) -> HostFacts:
        values: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip().strip('"')
        facts = cls(
            os_id=values.get("ID", ""),
            version_id=values.get("VERSION_ID", ""),
            codename=values.get("VERSION_CODENAME", ""),
            pretty_name=values.get("PRETTY_NAME", "an unknown system"),
            has_systemd=values.get("BROKEFORGE_INIT") == "systemd",
        )
        supported = (facts.os_id, facts.version_id) in SUPPORTED_SYSTEMS
        # The codename ends up in apt source lines: only plain words pass.
        if not supported or not re.fullmatch(r"[a-z]+", facts.codename):
            raise UnsupportedSystem(
                f"{facts.pretty_name} is not supported: BrokeForge manages "
                "Debian 12 and Ubuntu 22.04 and 24.04"
            )
        return facts


@dataclass(frozen=True)
class Field:
    """One option a person gives for an action (a create form field, a CLI flag).

    The kind's `clean_params` is what validates it; this only describes it.
    """

    name: str
    label: str
    help: str = ""
    required: bool = True
    #: Allowed values, (value, text) pairs; empty for free text.
    choices: Sequence[tuple[str, str]] = ()
    #: A password: never echoed, never stored in an operation's params.
    secret: bool = False
    #: A yes/no option (a checkbox, a --flag/--no-flag pair).
    boolean: bool = False
    default: str = ""


class Script(str):
    """A script with input text for the host.

    The executor sends `stdin` over the channel into a file only root can
    read, named by `$BF_INPUT` in the script and deleted when it exits (see
    `servers.ssh.INPUT_PRELUDE`): a secret (a database password) or a whole
    config file reaches the host without appearing on a command line (`ps`)
    and without shell quoting.
    """

    stdin: str

    def __new__(cls, text: str, stdin: str = "") -> Script:
        script = super().__new__(cls, text)
        script.stdin = stdin
        return script


def read_db(work: Callable[[], T]) -> T:
    """Run a database read from code that the runner calls inside its event loop.

    Django refuses database access on a thread running an event loop; kinds
    that need a record's secret while building a script read it on a thread
    of its own, whose connection is closed afterwards.
    """

    def isolated() -> T:
        try:
            return work()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bf-kind-db") as pool:
        return pool.submit(isolated).result()


class PackageRecord(ManagedRecord):
    """Base of the records of kinds with a model of their own.

    The record's kind is fixed by its model (`KIND`); how it is named comes
    from the kind (`PackageKind.describe`).
    """

    KIND: ClassVar[str]

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.label()

    def kind_name(self) -> str:
        return self.KIND

    def label(self) -> str:
        from brokeforge.packages.registry import get_kind

        return f"{get_kind(self.KIND).describe(self)} on {self.server.name}"


class PackageKind:
    """One kind of thing BrokeForge manages. Subclass once per kind."""

    name: ClassVar[str]
    label: ClassVar[str]
    #: The server page's section the kind is shown in (see FAMILIES).
    family: ClassVar[str] = "databases"
    #: The record model; None means `packages.models.Database` (one table
    #: for the one-per-server database servers, told apart by `kind`).
    model: ClassVar[type[ManagedRecord] | None] = None
    #: Whether a server has many records of this kind (databases in a
    #: database server, cron tasks) or at most one (a service).
    many: ClassVar[bool] = False
    #: The kind whose record must be `active` before this one is created or
    #: changed; see `parent_kind` for a choice made per record.
    parent: ClassVar[str | None] = None
    #: Words for the actions where "install"/"remove" sound wrong, e.g.
    #: {"install": "create", "remove": "drop"}.
    verbs: ClassVar[Mapping[str, str]] = {}
    #: Options of a create request (in the order forms and the CLI show them).
    fields: ClassVar[Sequence[Field]] = ()
    #: Options of an update request.
    update_fields: ClassVar[Sequence[Field]] = ()
    #: Options of a remove request.
    remove_fields: ClassVar[Sequence[Field]] = ()
    #: Kinds that cannot be installed on the same server as this one.
    conflicts: ClassVar[frozenset[str]] = frozenset()
    #: Seconds each action may run before it is ended as timed out.
    timeouts: ClassVar[Mapping[str, int]] = {}
    #: Whether the kind's scripts use the server's package manager.
    uses_package_manager: ClassVar[bool] = True
    #: The field that names a record among its server's records of this kind
    #: (a task's name, a site's domain); None where nothing must be unique.
    unique_by: ClassVar[str | None] = None

    def timeout(self, action: Action) -> int:
        return self.timeouts.get(action, DEFAULT_TIMEOUT)

    def verb(self, action: str) -> str:
        """The word a person reads for `action` on this kind ("create", "drop")."""
        return self.verbs.get(action, DEFAULT_VERBS.get(action, action))

    def record_model(self) -> type[ManagedRecord]:
        if self.model is not None:
            return self.model
        from brokeforge.packages.models import Database

        return Database

    def records(self, server: Server | None = None) -> models.QuerySet[Any]:
        """This kind's records (on `server`, when given)."""
        rows = self.record_model()._default_manager.all()
        if self.model is None:
            rows = rows.filter(**{"kind": self.name})
        if server is not None:
            rows = rows.filter(server=server)
        return rows

    def new_record(self, server: Server, clean: Mapping[str, Any]) -> ManagedRecord:
        """An unsaved record for a create request with validated options.

        A kind with a secret option stores it (encrypted) here; everything
        `identity` returns goes into the operation's params, the secret not.
        """
        if self.model is None:
            from brokeforge.packages.models import Database

            return Database(server=server, kind=self.name)
        return self.model(server=server, **clean)

    def identity(self, record: ManagedRecord) -> dict[str, Any]:
        """What the scripts need to know of the record: kept in every operation's
        params, so never a secret. Empty for a one-per-server kind."""
        return {}

    def describe(self, record: ManagedRecord) -> str:
        """How a person names a record of a kind with its own model."""
        return self.label

    def details(self, record: ManagedRecord) -> str:
        """A line the page shows under the record (a deploy key); "" for none."""
        return ""

    def secret(self, record: ManagedRecord) -> str:
        """The record's secret (a generated password) for its owner to read;
        empty when it has none. Shown only on explicit request."""
        return ""

    def describe_missing(self, lookup: Mapping[str, Any]) -> str:
        """How to name a needed record of this kind that does not exist, from
        the lookup that would find it (for kinds with many: "PHP 8.2")."""
        return self.label

    def parent_kind(self, record: ManagedRecord) -> str | None:
        """The kind whose record must be active for `record` (None: none)."""
        return self.parent

    def parent_lookup(self, record: ManagedRecord) -> dict[str, Any]:
        """Field lookups that pick the parent among many records of its kind."""
        return {}

    def requires(self, record: ManagedRecord) -> list[tuple[str, dict[str, Any]]]:
        """Every record `record` needs active: (kind name, field lookups).

        By default the one parent of `parent_kind`/`parent_lookup`; a kind
        that needs several (a site: nginx and its PHP version) overrides it.
        """
        parent = self.parent_kind(record)
        return [(parent, self.parent_lookup(record))] if parent else []

    def is_parent_of(self, parent: ManagedRecord, record: ManagedRecord) -> bool:
        """Whether `record` (of this kind) depends on `parent`."""
        return any(
            kind == parent.kind_name()
            and all(getattr(parent, key) == value for key, value in lookup.items())
            for kind, lookup in self.requires(record)
        )

    def unique_clash(
        self, server: Server, clean: Mapping[str, Any]
    ) -> ManagedRecord | None:
        """An existing record the new one would collide with, if any: by
        default the server's record with the same `unique_by` value."""
        if self.unique_by is None or self.model is None:
            return None
        found: ManagedRecord | None = self.model._default_manager.filter(
            server=server, **{self.unique_by: clean[self.unique_by]}
        ).first()
        return found

    def clean_params(self, action: Action, params: Mapping[str, Any]) -> dict[str, Any]:
        """Validate what the person chose for `action`; `InvalidOption` naming
        the option when one is wrong (a plain `ActionRefused` only for what
        is no option's fault)."""
        if params:
            raise InvalidOption(
                sorted(params)[0], f"{action} of {self.label} takes no options"
            )
        return {}

    def script(
        self, action: Action, facts: HostFacts, params: Mapping[str, Any]
    ) -> str:
        raise NotImplementedError

    def after_verify(self, operation: Operation, output: str) -> None:
        """Store what verification learned (runs in the worker, in the database)."""

    def verify_script(
        self,
        action: Action,
        facts: HostFacts,
        params: Mapping[str, Any] | None = None,
    ) -> str:
        """A script that exits 0 only when the action's effect is real.

        `params` are the operation's, as `script` gets them (kinds written
        before the runner passed them check at the end of their action script
        instead and answer `true` here).

        Its last line of output is kept as the record's version after an
        install or update.
        """
        raise NotImplementedError
