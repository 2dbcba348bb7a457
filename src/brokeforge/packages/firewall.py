"""The firewall (ufw) and its rules.

`Firewall` installs ufw with incoming traffic denied and outgoing allowed,
after first allowing the port BrokeForge's own SSH session came in on, so
enabling it never locks BrokeForge out. `FirewallRule` adds or removes one
ufw rule (a port or range, tcp/udp/any, a source address or network, allow
or deny) while the firewall is active.

Each rule carries the comment ``brokeforge-rule-<id>`` on the host; that is
how verification finds it in ``ufw status``. ufw checks rules in the order
they were added and the first match wins; BrokeForge's SSH rule comes first,
which is also why a deny rule on that port is refused.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from brokeforge.lifecycle.errors import ActionRefused, InvalidOption
from brokeforge.lifecycle.models import Action, ManagedRecord, Operation
from brokeforge.packages import validators
from brokeforge.packages.apt import q, script_header
from brokeforge.packages.base import Field, HostFacts, PackageKind
from brokeforge.packages.models import FirewallRule

if TYPE_CHECKING:
    from brokeforge.servers.models import Server

PROTOCOLS = ("tcp", "udp", "any")
POLICIES = ("allow", "deny")
ANY_SOURCE = "any"
SSH_COMMENT = "BrokeForge SSH"

# Digits are spelled out: `\d` would also accept other scripts' digits.
_PORT = re.compile(r"([0-9]{1,5})(?:[:-]([0-9]{1,5}))?")
# What an address or network may look like before ipaddress judges it.
_SOURCE_CHARS = re.compile(r"[0-9A-Fa-f:./]{2,49}")

# Shell helpers of the firewall scripts. The SSH port is read from the
# session itself (SSH_CONNECTION's fourth field is the server-side port), so
# it is the port BrokeForge really uses, even behind a port forward.
FIREWALL_FUNCTIONS = r"""
bf_ssh_port() {
  local port
  port=$(printf '%s\n' "${SSH_CONNECTION:-}" | awk '{print $4}')
  case "$port" in
    '' | *[!0-9]*)
      echo "cannot tell which port BrokeForge's SSH session uses" \
        "(SSH_CONNECTION is not set)" >&2
      return 1 ;;
  esac
  echo "$port"
}

bf_need_ufw() {
  if ! command -v ufw >/dev/null 2>&1; then
    echo "ufw is not installed on this server: install the firewall first" >&2
    return 1
  fi
}

bf_ufw_has_comment() {
  ufw status | grep -Eq "# $1[[:space:]]*\$"
}
"""


# -- validation ---------------------------------------------------------------


def clean_port(value: Any) -> str:
    """One port as "80", or a range as "8000:8100" (given as 8000-8100 too)."""
    text = (value if isinstance(value, str) else str(value or "")).strip(" ")
    if isinstance(value, bool) or not (match := _PORT.fullmatch(text)):
        raise ActionRefused(
            "the port must be a number from 1 to 65535 or a range such as "
            f"8000:8100, not {text!r}"
        )
    low = int(match[1])
    high = int(match[2]) if match[2] else low
    if not (1 <= low <= 65535 and 1 <= high <= 65535):
        raise ActionRefused(f"ports go from 1 to 65535, not {text!r}")
    if match[2] is None:
        return str(low)
    if low >= high:
        raise ActionRefused(
            f"a port range goes from low to high (8000:8100), not {text!r}"
        )
    return f"{low}:{high}"


def clean_source(value: Any) -> str:
    """The word any, or an IPv4/IPv6 address or network in canonical form."""
    text = (value if isinstance(value, str) else "").strip(" ")
    if value is None or text.lower() in ("", ANY_SOURCE):
        return ANY_SOURCE
    hint = (
        "the source must be an address or network such as 203.0.113.7, "
        "203.0.113.0/24 or 2001:db8::/32, or 'any'"
    )
    if not isinstance(value, str) or not _SOURCE_CHARS.fullmatch(text):
        raise ActionRefused(f"{hint}, not {value!r}")
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as error:
        raise ActionRefused(f"{hint}: {error}") from None
    return str(network)


def _choice(params: Mapping[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    value = params.get(name, allowed[0])
    if value not in allowed:
        raise ActionRefused(
            f"{name} must be one of {', '.join(allowed)}, not {value!r}"
        )
    return str(value)


def clean_rule(params: Mapping[str, Any]) -> dict[str, str]:
    """Validate a rule's options; the result is safe for a shell and for ufw."""
    validators.refuse_unknown(
        params,
        {"port", "protocol", "source", "policy"},
        "unknown option for a firewall rule",
    )
    with validators.option("port"):
        port = clean_port(params.get("port"))
    with validators.option("protocol"):
        protocol = _choice(params, "protocol", PROTOCOLS)
    if ":" in port and protocol == "any":
        raise InvalidOption(
            "protocol", "a port range needs a protocol: choose tcp or udp"
        )
    with validators.option("source"):
        source = clean_source(params.get("source"))
    with validators.option("policy"):
        policy = _choice(params, "policy", POLICIES)
    return {"port": port, "protocol": protocol, "source": source, "policy": policy}


def covers(port: str, protocol: str, ssh_port: int) -> bool:
    """Whether a rule on `port`/`protocol` applies to TCP port `ssh_port`."""
    if protocol == "udp":
        return False
    low, _, high = port.partition(":")
    return int(low) <= ssh_port <= int(high or low)


def ufw_rule_words(rule: Mapping[str, str]) -> list[str]:
    """The rule in ufw's full syntax, e.g. allow proto tcp from any to any port 80."""
    words = [rule["policy"]]
    if rule["protocol"] != "any":
        words += ["proto", rule["protocol"]]
    return [*words, "from", rule["source"], "to", "any", "port", rule["port"]]


def rule_comment(record_id: int) -> str:
    return f"brokeforge-rule-{int(record_id)}"


# -- the kinds -----------------------------------------------------------------


class Firewall(PackageKind):
    name = "firewall"
    label = "Firewall (ufw)"
    family = "firewall"
    timeouts = {"install": 600, "update": 600, "remove": 300}

    def script(
        self, action: Action, facts: HostFacts, params: Mapping[str, Any]
    ) -> str:
        header = script_header(facts) + FIREWALL_FUNCTIONS
        if action == Action.REMOVE:
            return header + self._remove_steps()
        upgrade = "--only-upgrade " if action == Action.UPDATE else ""
        return (
            header
            + "bf_apt_update\n"
            + f"bf_apt install {upgrade}ufw\n"
            # The SSH port is allowed before anything is denied.
            + "ssh_port=$(bf_ssh_port)\n"
            + f'ufw allow "$ssh_port/tcp" comment {q(SSH_COMMENT)}\n'
            + "ufw default deny incoming\n"
            + "ufw default allow outgoing\n"
            + "ufw --force enable\n"
        )

    def _remove_steps(self) -> str:
        # ufw disable leaves its emptied chains hooked into INPUT/OUTPUT/
        # FORWARD; they are taken out too, so nothing of ufw stays loaded.
        return r"""
if command -v ufw >/dev/null 2>&1; then ufw --force disable; fi
for bf_tool in iptables ip6tables; do
  command -v "$bf_tool" >/dev/null 2>&1 || continue
  { "$bf_tool" -S | grep -E '^-A (INPUT|OUTPUT|FORWARD) -j ufw6?-' || true; } |
    while read -r _ bf_chain bf_rest; do
      # shellcheck disable=SC2086 # the rest of the rule is several words
      "$bf_tool" -D "$bf_chain" $bf_rest
    done
  bf_chains=$("$bf_tool" -S | awk '$1 == "-N" && $2 ~ /^ufw6?-/ {print $2}')
  for bf_chain in $bf_chains; do "$bf_tool" -F "$bf_chain"; done
  for bf_chain in $bf_chains; do "$bf_tool" -X "$bf_chain"; done
done
bf_purge ufw
"""

    def verify_script(
        self,
        action: Action,
        facts: HostFacts,
        params: Mapping[str, Any] | None = None,
    ) -> str:
        header = script_header(facts) + FIREWALL_FUNCTIONS
        if action == Action.REMOVE:
            return header + (
                "if bf_is_installed ufw; then "
                "echo 'ufw is still installed' >&2; exit 1; fi\n"
                "if command -v iptables >/dev/null 2>&1 "
                "&& iptables -S | grep -q ufw; then\n"
                '  echo "ufw\'s rules are still loaded:" >&2\n'
                "  iptables -S | grep ufw >&2; exit 1\n"
                "fi\n"
                "echo removed\n"
            )
        return header + (
            "bf_need_ufw\n"
            "ssh_port=$(bf_ssh_port)\n"
            "status=$(ufw status verbose)\n"
            "printf '%s\\n' \"$status\"\n"
            'bf_fail() { echo "$1" >&2; printf \'%s\\n\' "$status" >&2; exit 1; }\n'
            "grep -qx 'Status: active' <<<\"$status\" || bf_fail 'ufw is not active'\n"
            "grep -q '^Default: deny (incoming), allow (outgoing)' <<<\"$status\" "
            "|| bf_fail 'ufw does not deny incoming and allow outgoing by default'\n"
            'grep -Eq "^$ssh_port/tcp +ALLOW IN +Anywhere" <<<"$status" '
            '|| bf_fail "ufw does not allow BrokeForge\'s SSH port $ssh_port/tcp"\n'
            "ufw version | awk 'NR == 1 {print $2}'\n"
        )

    def after_verify(self, operation: Operation, output: str) -> None:
        from brokeforge.packages.models import Database

        if operation.action == Action.REMOVE:
            return
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        if lines:
            Database.objects.filter(pk=operation.record_id).update(
                version=lines[-1][:200]
            )


class FirewallRuleKind(PackageKind):
    name = FirewallRule.KIND
    label = "Firewall rule"
    family = "firewall"
    model = FirewallRule
    many = True
    parent = "firewall"
    verbs = {"install": "add", "remove": "remove"}
    uses_package_manager = False
    timeouts = {"install": 120, "update": 120, "remove": 120}
    fields = (
        Field(
            "port",
            "Port or range",
            help="80, or a range such as 8000:8100 (a range needs tcp or udp)",
        ),
        Field(
            "protocol",
            "Protocol",
            choices=(("tcp", "tcp"), ("udp", "udp"), ("any", "tcp and udp")),
            default="tcp",
        ),
        Field(
            "source",
            "From",
            help="an address or network (203.0.113.0/24, 2001:db8::/32), or any",
            default=ANY_SOURCE,
        ),
        Field(
            "policy",
            "Allow or deny",
            choices=(("allow", "allow"), ("deny", "deny")),
            default="allow",
        ),
    )

    def clean_params(self, action: Action, params: Mapping[str, Any]) -> dict[str, Any]:
        if action == Action.INSTALL:
            return clean_rule(params)
        if action == Action.UPDATE:
            raise ActionRefused(
                "a firewall rule is not updated: remove it and add the new one"
            )
        return super().clean_params(action, params)

    def new_record(self, server: Server, clean: Mapping[str, Any]) -> ManagedRecord:
        if clean["policy"] == "deny" and covers(
            clean["port"], clean["protocol"], server.port
        ):
            raise ActionRefused(
                f"a deny rule on port {clean['port']} would cut BrokeForge off "
                f"from {server.name} (it connects on port {server.port}): "
                "the firewall keeps that port open"
            )
        return FirewallRule(server=server, **clean)

    def unique_clash(
        self, server: Server, clean: Mapping[str, Any]
    ) -> ManagedRecord | None:
        same = {key: clean[key] for key in ("port", "protocol", "source")}
        clash: ManagedRecord | None = FirewallRule.objects.filter(
            server=server, **same
        ).first()
        return clash

    def identity(self, record: ManagedRecord) -> dict[str, Any]:
        assert isinstance(record, FirewallRule)
        return {
            "record_id": record.pk,
            "port": record.port,
            "protocol": record.protocol,
            "source": record.source,
            "policy": record.policy,
        }

    def describe(self, record: ManagedRecord) -> str:
        assert isinstance(record, FirewallRule)
        protocol = "" if record.protocol == "any" else f"/{record.protocol}"
        return f"rule {record.policy} {record.port}{protocol} from {record.source}"

    def script(
        self, action: Action, facts: HostFacts, params: Mapping[str, Any]
    ) -> str:
        # Everything here was validated by clean_rule before it was stored;
        # it is checked again because the params come back from the database.
        rule = clean_rule({key: params[key] for key in ufw_fields(params)})
        comment = rule_comment(params["record_id"])
        words = " ".join(q(word) for word in ufw_rule_words(rule))
        header = script_header(facts) + FIREWALL_FUNCTIONS
        if action == Action.REMOVE:
            return header + (
                "if ! command -v ufw >/dev/null 2>&1; then\n"
                "  echo 'ufw is not installed: the rule went with it'; exit 0\n"
                "fi\n"
                f"ufw delete {words}\n"
                f"if bf_ufw_has_comment {q(comment)}; then\n"
                "  echo 'ufw still shows the rule:' >&2; ufw status >&2; exit 1\n"
                "fi\n"
            )
        guard = ""
        if rule["policy"] == "deny" and rule["protocol"] != "udp":
            low, _, high = rule["port"].partition(":")
            guard = (
                "ssh_port=$(bf_ssh_port)\n"
                f'if [ "$ssh_port" -ge {low} ] && [ "$ssh_port" -le {high or low} ]; '
                "then\n"
                "  echo \"refusing to deny port $ssh_port: BrokeForge's SSH session"
                ' uses it" >&2; exit 1\n'
                "fi\n"
            )
        return (
            header
            + (
                "bf_need_ufw\n"
                + guard
                + f"ufw {words} comment {q(comment)}\n"
                # Verified here: the runner's verification does not know the rule.
                + f"if ! bf_ufw_has_comment {q(comment)}; then\n"
                "  echo 'ufw does not show the rule after adding it:' >&2\n"
                "  ufw status >&2; exit 1\n"
                "fi\n"
                "ufw status\n"
            )
        )

    def verify_script(
        self,
        action: Action,
        facts: HostFacts,
        params: Mapping[str, Any] | None = None,
    ) -> str:
        # Shortcoming: the rule itself is still checked at the end of its
        # action script, written before the runner passed `params` here;
        # this checks what every rule needs, until the rule's own check
        # moves here.
        header = script_header(facts) + FIREWALL_FUNCTIONS
        if action == Action.REMOVE:
            return header + "echo removed\n"
        return header + (
            "bf_need_ufw\n"
            "if ! ufw status | grep -qx 'Status: active'; then\n"
            "  echo 'ufw is not active on this server' >&2; exit 1\n"
            "fi\n"
            "echo active\n"
        )


def ufw_fields(params: Mapping[str, Any]) -> list[str]:
    return [key for key in ("port", "protocol", "source", "policy") if key in params]
