"""Shell building blocks for kinds that are an apt package plus a service.

`AptServiceKind` covers the common shape (install, update to the newest
package, purge with an explicit choice about data); a kind module fills in
package names, its service, its data directory and how to prove it answers.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from django.conf import settings

from brokeforge.lifecycle.errors import InvalidOption
from brokeforge.lifecycle.models import Action, Operation
from brokeforge.packages import validators
from brokeforge.packages.base import Field, HostFacts, PackageKind

BACKUP_DIR = "/var/backups/brokeforge"
DATA_CHOICES = ("keep", "delete")
#: What Remove asks about the data directory.
DATA_FIELD = Field(
    "data",
    "its data",
    choices=(("keep", f"keep (moved to {BACKUP_DIR})"), ("delete", "delete")),
)

# Shell functions every apt script starts with. apt waits up to
# BF_LOCK_TIMEOUT seconds for a dpkg lock held by someone else, then fails
# with its own "Could not get lock" message. `apt-get update` takes the lists
# lock, which that option does not cover, so it is retried here while the
# error is a busy lock. Downloads are retried a few times (Acquire::Retries),
# so a mirror or name server that hiccups once does not fail the operation.
APT_FUNCTIONS = r"""
# A package run cut short (a timeout, a cancel, a lost worker) leaves dpkg
# "interrupted", and apt then refuses everything until it is finished: do
# that first, so Retry works after any of those.
bf_finish_interrupted() {
  if [ -n "$(ls -A /var/lib/dpkg/updates 2>/dev/null)" ]; then
    echo "== finishing an interrupted earlier package run (dpkg --configure -a)"
    dpkg --force-confdef --force-confold --configure -a
  fi
}

bf_apt() {
  bf_finish_interrupted
  apt-get -y -q -o DPkg::Lock::Timeout="$BF_LOCK_TIMEOUT" -o Acquire::Retries=3 \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}

bf_apt_update() {
  local deadline=$((SECONDS + BF_LOCK_TIMEOUT)) log status
  log=$(mktemp)
  while true; do
    status=0
    apt-get -q -o DPkg::Lock::Timeout="$BF_LOCK_TIMEOUT" -o Acquire::Retries=3 \
      update 2>"$log" || status=$?
    cat "$log" >&2
    # apt-get update exits 0 when a source could not be fetched; installing
    # from stale lists would then fail with a misleading "Unable to locate".
    if [ "$status" -eq 0 ] && grep -q 'Failed to fetch' "$log"; then
      echo "apt-get update could not fetch every package list (see above):" \
        "check the server's apt sources and network" >&2
      rm -f "$log"; return 1
    fi
    if [ "$status" -eq 0 ]; then rm -f "$log"; return 0; fi
    if ! grep -q 'Could not get lock' "$log" || [ "$SECONDS" -ge "$deadline" ]; then
      rm -f "$log"; return "$status"
    fi
    echo "waiting for the package manager lock" >&2
    sleep 3
  done
}

bf_is_known() {
  dpkg-query -W "$1" >/dev/null 2>&1
}

bf_is_installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

bf_purge() {
  local p pkgs=()
  for p in "$@"; do
    if bf_is_known "$p"; then pkgs+=("$p"); fi
  done
  if [ "${#pkgs[@]}" -gt 0 ]; then bf_apt purge "${pkgs[@]}"; fi
  bf_apt autoremove --purge
}

bf_service() {
  if [ "$BF_SYSTEMD" = 1 ]; then
    systemctl "$1" "$2"
  elif [ -x "/etc/init.d/$2" ]; then
    "/etc/init.d/$2" "$1"
  else
    echo "cannot $1 $2: no systemd and no /etc/init.d/$2" >&2
    return 1
  fi
}

bf_enable_service() {
  if [ "$BF_SYSTEMD" = 1 ]; then
    systemctl enable "$1"
    systemctl restart "$1"
  else
    bf_service restart "$1"
  fi
}

bf_wait_for() {
  local what=$1 i
  shift
  for i in $(seq 1 30); do
    if "$@"; then return 0; fi
    sleep 1
  done
  echo "$what does not answer on this host after 30 s" >&2
  return 1
}
"""


def script_header(facts: HostFacts) -> str:
    lock_timeout = int(settings.BROKEFORGE_APT_LOCK_TIMEOUT)
    systemd = "1" if facts.has_systemd else "0"
    return f"BF_LOCK_TIMEOUT={lock_timeout}\nBF_SYSTEMD={systemd}\n{APT_FUNCTIONS}"


def q(value: str) -> str:
    return shlex.quote(value)


class AptServiceKind(PackageKind):
    """A kind made of apt packages and one service with a data directory."""

    #: Packages `install` asks for.
    packages: ClassVar[Sequence[str]]
    #: Every package `remove` purges (including dependencies it pulled in).
    purge_packages: ClassVar[Sequence[str]]
    service: ClassVar[str]
    data_dir: ClassVar[str]
    #: Shell that succeeds only when the service answers (pipelines allowed).
    ping: ClassVar[str]
    #: A command that prints the running version.
    version_command: ClassVar[str]
    remove_fields: ClassVar[Sequence[Field]] = (DATA_FIELD,)

    def clean_params(self, action: Action, params: Mapping[str, Any]) -> dict[str, Any]:
        if action != Action.REMOVE or not self.data_dir:
            return super().clean_params(action, params)
        data = params.get("data")
        validators.refuse_unknown(params, {"data"}, "unknown option for remove")
        if data not in DATA_CHOICES:
            raise InvalidOption(
                "data",
                f"say what happens to {self.label}'s data ({self.data_dir}): "
                f"'keep' moves it to {BACKUP_DIR}, 'delete' deletes it",
            )
        return {"data": data}

    def script(
        self, action: Action, facts: HostFacts, params: Mapping[str, Any]
    ) -> str:
        body = {
            Action.INSTALL: self.install_steps,
            Action.UPDATE: self.update_steps,
        }.get(action)
        if body is not None:
            return script_header(facts) + body(facts)
        return script_header(facts) + self.remove_steps(facts, params.get("data", ""))

    def install_steps(self, facts: HostFacts) -> str:
        return (
            "bf_apt_update\n"
            f"bf_apt install {' '.join(map(q, self.packages))}\n"
            f"bf_enable_service {q(self.service)}\n"
        )

    def update_steps(self, facts: HostFacts) -> str:
        return (
            "bf_apt_update\n"
            f"bf_apt install --only-upgrade {' '.join(map(q, self.packages))}\n"
            f"bf_service restart {q(self.service)}\n"
        )

    def remove_steps(self, facts: HostFacts, data: str) -> str:
        """Stop, keep or delete the data directory as chosen, purge.

        A kind without a data directory (`data_dir = ""`) asks nothing and
        purges only; its configuration goes with the packages.
        """
        data_dir = q(self.data_dir)
        steps = f"bf_service stop {q(self.service)} || true\n"
        if data == "keep":
            steps += (
                f"if [ -d {data_dir} ]; then\n"
                f"  backup={BACKUP_DIR}/{self.name}-$(date -u +%Y%m%dT%H%M%SZ)\n"
                '  mkdir -p "$backup"\n'
                f'  cp -a {data_dir}/. "$backup"/\n'
                f"  rm -rf {data_dir}\n"
                f'  echo "kept {self.label} data in $backup"\n'
                "fi\n"
            )
        steps += f"bf_purge {' '.join(map(q, self.purge_packages))}\n"
        if data == "delete" and self.data_dir:
            steps += f"rm -rf {data_dir}\necho 'deleted {self.label} data'\n"
        return steps

    def after_verify(self, operation: Operation, output: str) -> None:
        from brokeforge.packages.models import Database

        if operation.action == Action.REMOVE:
            return
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        if lines:
            Database.objects.filter(pk=operation.record_id).update(
                version=lines[-1][:200]
            )

    def verify_script(
        self,
        action: Action,
        facts: HostFacts,
        params: Mapping[str, Any] | None = None,
    ) -> str:
        header = script_header(facts)
        if action == Action.REMOVE:
            checks = "".join(
                f"if bf_is_installed {q(p)}; then "
                f"echo '{p} is still installed' >&2; exit 1; fi\n"
                for p in self.packages
            )
            return header + checks + "echo removed\n"
        return (
            header
            + f"bf_ping() {{ {self.ping}; }}\n"
            + f"bf_wait_for {q(self.label)} bf_ping\n"
            + f"{self.version_command}\n"
        )
