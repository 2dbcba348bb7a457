from __future__ import annotations

from django.apps import AppConfig


class PackagesConfig(AppConfig):
    name = "brokeforge.packages"
    label = "packages"

    def ready(self) -> None:
        # Kinds named in BROKEFORGE_EXTRA_KINDS join the registry before any
        # request: the API and the pages read the registry directly.
        from brokeforge.packages.registry import load_extra_kinds

        load_extra_kinds()
