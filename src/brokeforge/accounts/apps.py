from __future__ import annotations

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "brokeforge.accounts"
    label = "accounts"

    def ready(self) -> None:
        from brokeforge.accounts import signin

        signin.connect()
