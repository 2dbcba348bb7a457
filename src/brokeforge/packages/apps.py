from __future__ import annotations

from django.apps import AppConfig


class PackagesConfig(AppConfig):
    name = "brokeforge.packages"
    label = "packages"
