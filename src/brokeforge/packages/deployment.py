"""Deployments: each run is a record of its own, with its own status.

A deployment needs the site's repository active. It fetches the branch,
checks it out in the web root, then runs the repository's deploy script
there (as root, under the operation's time limit); the output is the
operation's output, and the commit checked out is kept on the record.
Retrying a failed deployment runs it again. Deleting a deployment only
forgets it: nothing runs on the server.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from brokeforge.lifecycle.errors import ActionRefused
from brokeforge.lifecycle.models import Action, ManagedRecord
from brokeforge.packages import validators
from brokeforge.packages.apt import q, script_header
from brokeforge.packages.base import Field, HostFacts, PackageKind
from brokeforge.packages.models import Deployment, Site, SiteRepository
from brokeforge.packages.site_git import checkout, git_env, reload_php
from brokeforge.servers.models import Server

COMMIT_MARK = Deployment.COMMIT_MARK


class DeploymentKind(PackageKind):
    name = "deployment"
    label = "Deployment"
    family = "sites"
    model = Deployment
    many = True
    uses_package_manager = False
    timeouts = {"install": 900, "update": 900, "remove": 30}
    verbs = {"install": "deploy", "remove": "forget"}
    fields = (Field("domain", "Site", help="the site's domain"),)

    def clean_params(self, action: Action, params: Mapping[str, Any]) -> dict[str, Any]:
        if action != Action.INSTALL:
            return super().clean_params(action, params)
        validators.refuse_unknown(params, {"domain"})
        with validators.option("domain"):
            return {"domain": validators.domain(params.get("domain"), "site")}

    def identity(self, record: ManagedRecord) -> dict[str, Any]:
        assert isinstance(record, Deployment)
        repo = SiteRepository.objects.filter(
            server=record.server, domain=record.domain
        ).first()
        site = Site.objects.filter(server=record.server, domain=record.domain).first()
        return {
            "domain": record.domain,
            "web_root": site.web_root if site else "",
            "php_version": site.php_version if site else "",
            "branch": repo.branch if repo else "",
            "deploy_script": repo.deploy_script if repo else "",
        }

    def describe(self, record: ManagedRecord) -> str:
        assert isinstance(record, Deployment)
        if record.status != "active":
            return f"deployment #{record.pk} of {record.domain}"
        commit = record.commit()
        commit = f" at {commit[:12]}" if commit else ""
        return f"deployment #{record.pk} of {record.domain}{commit}"

    def parent_kind(self, record: ManagedRecord) -> str | None:
        return "site_git"

    def parent_lookup(self, record: ManagedRecord) -> dict[str, Any]:
        assert isinstance(record, Deployment)
        return {"domain": record.domain}

    def is_parent_of(self, parent: ManagedRecord, record: ManagedRecord) -> bool:
        # Finished deployments are history: they never hold their repository
        # back from removal; one still running does.
        return record.is_busy and super().is_parent_of(parent, record)

    def script(
        self, action: Action, facts: HostFacts, params: Mapping[str, Any]
    ) -> str:
        if action == Action.REMOVE:
            return "echo 'forgotten; nothing changed on the server'\n"
        domain, root = params["domain"], params["web_root"]
        if not root or not params["branch"]:
            raise ActionRefused(f"site {domain} has no repository to deploy from")
        steps = (
            script_header(facts) + git_env(domain, root) + checkout(params["branch"])
        )
        steps += f"chown -R www-data:www-data {q(root)}\n"
        if params["deploy_script"]:
            encoded = base64.b64encode(params["deploy_script"].encode()).decode()
            steps += (
                "deploy=$(mktemp)\n"
                f"printf '%s' {encoded} | base64 -d > \"$deploy\"\n"
                "echo '== running the deploy script'\n"
                "status=0\n"
                f'(cd {q(root)} && bash -euo pipefail "$deploy") || status=$?\n'
                'rm -f "$deploy"\n'
                'if [ "$status" -ne 0 ]; then\n'
                '  echo "the deploy script failed with exit status $status" >&2\n'
                "  exit 1\n"
                "fi\n"
            )
        steps += reload_php(params.get("php_version", ""))
        return steps + f"echo {COMMIT_MARK}$(bf_git rev-parse HEAD)\n"

    def verify_script(
        self,
        action: Action,
        facts: HostFacts,
        params: Mapping[str, Any] | None = None,
    ) -> str:
        return "true\n"

    def unique_clash(
        self, server: Server, clean: Mapping[str, Any]
    ) -> ManagedRecord | None:
        return None
