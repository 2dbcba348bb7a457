"""Sites: an nginx server block, a PHP-FPM pool and a web root.

A site needs Nginx active, and a PHP site its PHP version too. Provisioning
writes the server block and the pool (files BrokeForge owns, named after the
domain), creates the web root with a placeholder page when it is empty, and
proves the site answers: an HTTP request on the host, with the site's name,
must get 200. Removing a site deletes its server block and pool; its files
are kept or deleted as the person chooses.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from brokeforge.lifecycle.errors import ActionRefused, InvalidOption
from brokeforge.lifecycle.models import Action, ManagedRecord
from brokeforge.packages import validators
from brokeforge.packages.apt import q, script_header
from brokeforge.packages.base import Field, HostFacts, PackageKind
from brokeforge.packages.models import Site
from brokeforge.packages.php import VERSION

WEB_PARENTS = ("/var/www/", "/srv/")
MAX_ALIASES = 10
PLACEHOLDER_MARK = "brokeforge-placeholder"
FILES_FIELD = Field(
    "files",
    "its files",
    choices=(("keep", "keep the web root"), ("delete", "delete the web root")),
)


def server_block_file(domain: str) -> str:
    return f"/etc/nginx/sites-available/brokeforge-{domain}.conf"


def enabled_link(domain: str) -> str:
    return f"/etc/nginx/sites-enabled/brokeforge-{domain}.conf"


def pool_file(version: str, domain: str) -> str:
    return f"/etc/php/{version}/fpm/pool.d/brokeforge-{domain}.conf"


def pool_socket(domain: str) -> str:
    return f"/run/php/brokeforge-{domain}.sock"


def write_file(path: str, text: str, mode: str = "0644") -> str:
    """Shell that writes `text` to `path` whole: base64 keeps every byte of
    it out of the shell's parsing (it holds no secret)."""
    encoded = base64.b64encode(text.encode()).decode()
    return (
        f"tmp=$(mktemp {q(path)}.XXXXXX)\n"
        f"printf '%s' {encoded} | base64 -d > \"$tmp\"\n"
        f'chmod {mode} "$tmp"\n'
        f'mv -f "$tmp" {q(path)}\n'
    )


def http_check(domain: str, path: str = "/") -> str:
    """Shell printing the status line and body the local nginx gives for
    `domain` (bash's /dev/tcp: no curl needed)."""
    request = (
        f"GET {path} HTTP/1.0\\r\\nHost: {domain}\\r\\nConnection: close\\r\\n\\r\\n"
    )
    return (
        "timeout 10 bash -c 'exec 3<>/dev/tcp/127.0.0.1/80; "
        f'printf "{request}" >&3; cat <&3\''
    )


def web_root(value: object, domain: str) -> str:
    if value in (None, ""):
        return f"/var/www/{domain}"
    path = validators.absolute_path(value, "web root")
    if not path.startswith(WEB_PARENTS) or path.rstrip("/") + "/" in WEB_PARENTS:
        raise ActionRefused(
            f"web root {path!r} must be a directory inside /var/www or /srv"
        )
    return path


class SiteKind(PackageKind):
    name = "site"
    label = "Site"
    family = "sites"
    model = Site
    unique_by = "domain"
    many = True
    uses_package_manager = False
    timeouts = {"install": 120, "update": 120, "remove": 300}
    verbs = {"install": "provision"}
    fields = (
        Field("domain", "Domain", help="e.g. shop.example.com"),
        Field("aliases", "Aliases", required=False, help="other names, by spaces"),
        Field(
            "web_root",
            "Web root",
            required=False,
            help="default /var/www/DOMAIN; inside /var/www or /srv",
        ),
        Field(
            "php_version",
            "PHP version",
            required=False,
            help="e.g. 8.2; leave empty for a static site",
        ),
    )
    remove_fields: ClassVar[Sequence[Field]] = (FILES_FIELD,)

    def clean_params(self, action: Action, params: Mapping[str, Any]) -> dict[str, Any]:
        if action == Action.REMOVE:
            files = params.get("files")
            if set(params) - {"files"} or files not in ("keep", "delete"):
                raise InvalidOption(
                    "files",
                    "say what happens to the site's files: 'keep' leaves the web "
                    "root as it is, 'delete' deletes it",
                )
            return {"files": files}
        if action != Action.INSTALL:
            return super().clean_params(action, params)
        validators.refuse_unknown(params, {f.name for f in self.fields})
        with validators.option("domain"):
            name = validators.domain(params.get("domain"))
        aliases = str(params.get("aliases") or "").replace(",", " ").split()
        if len(aliases) > MAX_ALIASES:
            raise InvalidOption("aliases", f"give at most {MAX_ALIASES} aliases")
        with validators.option("aliases"):
            clean_aliases = [validators.domain(a, "alias") for a in aliases]
        php = str(params.get("php_version") or "")
        if php and not VERSION.fullmatch(php):
            raise InvalidOption(
                "php_version", f"PHP version {php[:20]!r} is not valid: e.g. 8.2"
            )
        with validators.option("web_root"):
            root = web_root(params.get("web_root"), name)
        return {
            "domain": name,
            "aliases": " ".join(a for a in clean_aliases if a != name),
            "web_root": root,
            "php_version": php,
        }

    def identity(self, record: ManagedRecord) -> dict[str, Any]:
        assert isinstance(record, Site)
        return {
            "domain": record.domain,
            "aliases": record.aliases,
            "web_root": record.web_root,
            "php_version": record.php_version,
        }

    def describe(self, record: ManagedRecord) -> str:
        assert isinstance(record, Site)
        php = f", PHP {record.php_version}" if record.php_version else ", static"
        return f"site {record.domain}{php}"

    def requires(self, record: ManagedRecord) -> list[tuple[str, dict[str, Any]]]:
        assert isinstance(record, Site)
        needed: list[tuple[str, dict[str, Any]]] = [("nginx", {})]
        if record.php_version:
            needed.append(("php", {"version": record.php_version}))
        return needed

    def server_block(self, p: Mapping[str, Any]) -> str:
        names = " ".join([p["domain"], *p["aliases"].split()])
        domain = p["domain"]
        if p["php_version"]:
            locations = (
                "    location / {\n"
                "        try_files $uri $uri/ /index.php?$query_string;\n"
                "    }\n"
                "    location ~ \\.php$ {\n"
                "        include snippets/fastcgi-php.conf;\n"
                f"        fastcgi_pass unix:{pool_socket(domain)};\n"
                "    }\n"
            )
        else:
            locations = "    location / {\n        try_files $uri $uri/ =404;\n    }\n"
        return (
            f"# Managed by BrokeForge (site {domain}): changes here are overwritten.\n"
            "server {\n"
            "    listen 80;\n"
            f"    server_name {names};\n"
            f"    root {p['web_root']};\n"
            "    index index.php index.html;\n"
            f"    access_log /var/log/nginx/brokeforge-{domain}.access.log;\n"
            f"    error_log /var/log/nginx/brokeforge-{domain}.error.log;\n"
            f"{locations}"
            "    # Hidden files (.git, .env) are never served.\n"
            "    location ~ /\\.(?!well-known) {\n        deny all;\n    }\n"
            "}\n"
        )

    def pool(self, p: Mapping[str, Any]) -> str:
        domain = p["domain"]
        return (
            f"; Managed by BrokeForge (site {domain}): changes here are overwritten.\n"
            f"[brokeforge-{domain}]\n"
            "user = www-data\n"
            "group = www-data\n"
            f"listen = {pool_socket(domain)}\n"
            "listen.owner = www-data\n"
            "listen.group = www-data\n"
            "pm = ondemand\n"
            "pm.max_children = 5\n"
            f"php_admin_value[open_basedir] = {p['web_root']}:/tmp\n"
        )

    def placeholder(self, p: Mapping[str, Any]) -> tuple[str, str]:
        """The page a new site shows until something is deployed."""
        if p["php_version"]:
            return "index.php", (
                f"<?php /* {PLACEHOLDER_MARK} */ echo 'BrokeForge site {p['domain']}"
                " on PHP ', PHP_VERSION, PHP_EOL;\n"
            )
        return "index.html", (
            f"<!-- {PLACEHOLDER_MARK} -->\n<p>BrokeForge site {p['domain']}</p>\n"
        )

    def script(
        self, action: Action, facts: HostFacts, params: Mapping[str, Any]
    ) -> str:
        if action == Action.REMOVE:
            return script_header(facts) + self._remove(params)
        return script_header(facts) + self._provision(params)

    def _provision(self, p: Mapping[str, Any]) -> str:
        domain, root, php = p["domain"], q(p["web_root"]), p["php_version"]
        index, page = self.placeholder(p)
        steps = [
            f"install -d -o www-data -g www-data -m 0755 {root}\n",
            # A placeholder only in an empty web root: never over real files.
            f'if [ -z "$(ls -A {root})" ]; then\n',
            "  " + write_file(f"{p['web_root']}/{index}", page).replace("\n", "\n  "),
            f"chown www-data:www-data {q(p['web_root'] + '/' + index)}\n",
            "fi\n",
        ]
        if php:
            fpm = q(f"php{php}-fpm")
            steps += [
                write_file(pool_file(php, domain), self.pool(p)),
                f"php-fpm{php} -t\n",
                f"bf_service reload {fpm}\n",
                f"bf_wait_for {q('the site pool')} test -S {q(pool_socket(domain))}\n",
            ]
        steps += [
            write_file(server_block_file(domain), self.server_block(p)),
            f"ln -sfn {q(server_block_file(domain))} {q(enabled_link(domain))}\n",
            "nginx -t\n",
            "bf_service reload nginx\n",
            # The site must serve its own web root for its own name: a probe
            # file with a random token, fetched through nginx, proves it (a
            # plain 200 could come from the default site while nginx reloads).
            "probe_dir=" + q(p["web_root"] + "/.well-known") + "\n"
            'probe=$(od -An -N12 -tx1 /dev/urandom | tr -d " \\n")\n'
            'install -d "$probe_dir"\n'
            'printf "%s" "$probe" > "$probe_dir/brokeforge-probe"\n'
            'chmod 0644 "$probe_dir/brokeforge-probe"\n'
            "answer=''\n"
            "for _ in $(seq 1 15); do\n"
            f"  answer=$({http_check(domain, '/.well-known/brokeforge-probe')} "
            "2>/dev/null || true)\n"
            '  case "$answer" in *"$probe"*) break ;; esac\n'
            "  sleep 1\n"
            "done\n"
            'rm -f "$probe_dir/brokeforge-probe"\n'
            'rmdir "$probe_dir" 2>/dev/null || true\n'
            'case "$answer" in\n'
            f'  *"$probe"*) echo "site {domain} answers through nginx" ;;\n'
            '  *) status=$(printf "%s\\n" "$answer" | head -n 1 | tr -d "\\r")\n'
            f'     echo "site {domain} does not serve its web root on this server: '
            '${status:-no answer}" >&2\n'
            f"     tail -n 2 /var/log/nginx/brokeforge-{domain}.error.log >&2 || true\n"
            "     exit 1 ;;\n"
            "esac\n",
        ]
        return "".join(steps)

    def _remove(self, p: Mapping[str, Any]) -> str:
        domain, php = p["domain"], p["php_version"]
        steps = [
            f"rm -f {q(enabled_link(domain))} {q(server_block_file(domain))}\n",
            "if command -v nginx >/dev/null; then nginx -t && bf_service reload nginx;"
            " fi\n",
        ]
        if php:
            steps.append(
                f"rm -f {q(pool_file(php, domain))}\n"
                f'if [ -x /etc/init.d/php{php}-fpm ] || [ "$BF_SYSTEMD" = 1 ]; then\n'
                f"  bf_service reload {q(f'php{php}-fpm')} || true\n"
                "fi\n"
            )
        if p.get("files") == "delete":
            steps.append(f"rm -rf {q(p['web_root'])}\necho 'deleted the web root'\n")
        steps.append(
            f"if [ -e {q(server_block_file(domain))} ]; then\n"
            f"  echo 'the server block of {domain} is still there' >&2; exit 1\n"
            "fi\n"
            f"echo 'removed site {domain}'\n"
        )
        return "".join(steps)

    def verify_script(
        self,
        action: Action,
        facts: HostFacts,
        params: Mapping[str, Any] | None = None,
    ) -> str:
        # The action script requests the site (or checks its removal) itself.
        return "true\n"
