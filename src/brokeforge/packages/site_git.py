"""A site's git repository: URL, branch, deploy script and a deploy key.

Creating one generates an ed25519 key pair for this site alone; the public
half is shown to the person to add to the repository host as a read-only
deploy key, the private half is stored encrypted and written on the server
as /etc/brokeforge/deploy-keys/DOMAIN (0600, through the script's input
file, never a command line). The install checks the branch out into the
site's web root. Deployments (see `deployment`) fetch and check out again,
then run the deploy script.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from brokeforge.crypto import encrypt
from brokeforge.lifecycle.errors import ActionRefused, InvalidOption
from brokeforge.lifecycle.models import Action, ManagedRecord
from brokeforge.packages import validators
from brokeforge.packages.apt import q, script_header
from brokeforge.packages.base import Field, HostFacts, PackageKind, Script, read_db
from brokeforge.packages.models import Site, SiteRepository
from brokeforge.packages.site import PLACEHOLDER_MARK
from brokeforge.servers.keys import generate_key_pair
from brokeforge.servers.models import Server

KEY_DIR = "/etc/brokeforge/deploy-keys"
KNOWN_HOSTS = "/etc/brokeforge/known_hosts"
MAX_DEPLOY_SCRIPT = 10_000


def key_file(domain: str) -> str:
    return f"{KEY_DIR}/{domain}"


def git_env(domain: str, web_root: str) -> str:
    """Shell defining `bf_git`: git in the web root, over ssh with the site's
    key only. A host's key is trusted the first time it is seen and pinned
    in KNOWN_HOSTS after that."""
    ssh = (
        f"ssh -i {key_file(domain)} -o IdentitiesOnly=yes -o BatchMode=yes "
        f"-o StrictHostKeyChecking=accept-new -o UserKnownHostsFile={KNOWN_HOSTS}"
    )
    return (
        f"export GIT_SSH_COMMAND={q(ssh)} GIT_TERMINAL_PROMPT=0\n"
        "bf_git() {\n"
        f'  git -c safe.directory={q(web_root)} -C {q(web_root)} "$@"\n'
        "}\n"
    )


def checkout(branch: str) -> str:
    """Shell fetching `branch` from origin and checking it out, forcibly."""
    return (
        f"bf_git fetch --depth 1 origin {q(branch)}\n"
        f"bf_git checkout -q -f -B {q(branch)} FETCH_HEAD\n"
    )


def reload_php(php_version: str) -> str:
    """Shell reloading the site's PHP-FPM after new code arrived: OPcache
    serves a file it compiled for up to `revalidate_freq` seconds after it
    changed, so without this the previous release answers for a while."""
    if not php_version:
        return ""
    return f"bf_service reload {q(f'php{php_version}-fpm')}\n"


class SiteRepositoryKind(PackageKind):
    name = "site_git"
    label = "Git repository"
    family = "sites"
    model = SiteRepository
    unique_by = "domain"
    many = True
    # It installs git when the server has none.
    uses_package_manager = True
    timeouts = {"install": 600, "update": 600, "remove": 120}
    fields = (
        Field("domain", "Site", help="the site's domain"),
        Field(
            "url",
            "Repository URL",
            help="https://..., ssh://..., git@host:path, file:///... or a path",
        ),
        Field("branch", "Branch", default="main"),
        Field(
            "deploy_script",
            "Deploy script",
            required=False,
            help="shell run in the web root after each checkout",
        ),
    )

    def clean_params(self, action: Action, params: Mapping[str, Any]) -> dict[str, Any]:
        if action != Action.INSTALL:
            return super().clean_params(action, params)
        validators.refuse_unknown(params, {f.name for f in self.fields})
        script = str(params.get("deploy_script") or "").replace("\r\n", "\n")
        if len(script) > MAX_DEPLOY_SCRIPT or "\x00" in script:
            raise InvalidOption(
                "deploy_script",
                f"the deploy script must be text of at most {MAX_DEPLOY_SCRIPT} "
                "characters",
            )
        get = params.get
        clean = validators.each(
            {
                "domain": lambda: validators.domain(get("domain"), "site"),
                "url": lambda: validators.git_url(get("url")),
                "branch": lambda: validators.git_branch(get("branch") or "main"),
            }
        )
        return {**clean, "deploy_script": script}

    def new_record(self, server: Server, clean: Mapping[str, Any]) -> ManagedRecord:
        private, public = generate_key_pair()
        return SiteRepository(
            server=server,
            domain=clean["domain"],
            url=clean["url"],
            branch=clean["branch"],
            deploy_script=clean["deploy_script"],
            deploy_key_encrypted=encrypt(private),
            deploy_public_key=public.replace(
                "brokeforge", f"brokeforge-{clean['domain']}"
            ),
        )

    def identity(self, record: ManagedRecord) -> dict[str, Any]:
        assert isinstance(record, SiteRepository)
        site = Site.objects.filter(server=record.server, domain=record.domain).first()
        return {
            "id": record.pk,
            "domain": record.domain,
            "web_root": site.web_root if site else "",
            "php_version": site.php_version if site else "",
            "url": record.url,
            "branch": record.branch,
        }

    def describe(self, record: ManagedRecord) -> str:
        assert isinstance(record, SiteRepository)
        return f"repository {record.url} ({record.branch}) of {record.domain}"

    def details(self, record: ManagedRecord) -> str:
        assert isinstance(record, SiteRepository)
        return f"deploy key: {record.deploy_public_key}"

    def parent_kind(self, record: ManagedRecord) -> str | None:
        return "site"

    def parent_lookup(self, record: ManagedRecord) -> dict[str, Any]:
        assert isinstance(record, SiteRepository)
        return {"domain": record.domain}

    def script(
        self, action: Action, facts: HostFacts, params: Mapping[str, Any]
    ) -> str:
        domain, root = params["domain"], params["web_root"]
        if not root:
            raise ActionRefused(f"site {domain} is gone: its web root is unknown")
        header = script_header(facts) + git_env(domain, root)
        if action == Action.REMOVE:
            return header + (
                f"rm -f {q(key_file(domain))}\n"
                f"rm -rf {q(root + '/.git')}\n"
                f"echo 'removed the repository and deploy key of {domain}'\n"
            )
        record_id = params["id"]
        private_key = read_db(
            lambda: SiteRepository.objects.get(pk=record_id).deploy_key()
        )
        body = (
            "if ! command -v git >/dev/null; then\n"
            "  bf_apt_update\n  bf_apt install git\nfi\n"
            f"install -d -m 0700 {KEY_DIR}\n"
            f'install -m 0600 "$BF_INPUT" {q(key_file(domain))}\n'
            'rm -f "$BF_INPUT"\n'
            f"if [ ! -d {q(root + '/.git')} ]; then\n"
            "  bf_git init -q\n"
            # The URL was checked not to start with "-": it cannot be an option.
            f"  bf_git remote add origin {q(params['url'])}\n"
            "else\n"
            f"  bf_git remote set-url origin {q(params['url'])}\n"
            "fi\n"
            # The placeholder page goes once real files arrive.
            "for page in index.php index.html; do\n"
            f'  if grep -qsF {PLACEHOLDER_MARK} {q(root)}/"$page"; then\n'
            f'    rm -f {q(root)}/"$page"\n'
            "  fi\n"
            "done\n"
            + checkout(params["branch"])
            + f"chown -R www-data:www-data {q(root)}\n"
            + reload_php(params.get("php_version", ""))
            + "bf_git rev-parse HEAD\n"
        )
        return Script(header + body, stdin=private_key)

    def verify_script(
        self,
        action: Action,
        facts: HostFacts,
        params: Mapping[str, Any] | None = None,
    ) -> str:
        # The action script checks the branch out (or removes it) itself.
        return "true\n"
