"""Checks for every server field that ends up in an SSH connection."""

from __future__ import annotations

import ipaddress
import re

from django.core.exceptions import ValidationError

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_HOSTNAME_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.IGNORECASE)
_UNIX_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def validate_server_name(value: str) -> None:
    if not _NAME.match(value):
        raise ValidationError(
            f"{value!r} is not a valid server name: use 1-63 lowercase letters, "
            "digits and dashes, starting with a letter or digit."
        )


def validate_host(value: str) -> None:
    """Accept an IPv4/IPv6 address or a DNS name; nothing a shell could misread."""
    try:
        ipaddress.ip_address(value)
        return
    except ValueError:
        pass
    labels = value.rstrip(".").split(".")
    # An all-digit last label is a mistyped address (256.1.1.1), not a name.
    if (
        len(value) > 253
        or not all(_HOSTNAME_LABEL.match(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise ValidationError(
            f"{value!r} is not a valid host: give an IP address or a DNS name."
        )


def validate_port(value: int) -> None:
    if not 1 <= value <= 65535:
        raise ValidationError(f"{value} is not a valid port: use 1 to 65535.")


def validate_ssh_user(value: str) -> None:
    if not _UNIX_USER.match(value):
        raise ValidationError(
            f"{value!r} is not a valid user name: use lowercase letters, digits, "
            "'_' and '-', starting with a letter or '_'."
        )
