"""SSH key pairs: generated per server, or imported from a file."""

from __future__ import annotations

import asyncssh


class InvalidKey(ValueError):
    pass


def generate_key_pair() -> tuple[str, str]:
    """Return a new ed25519 (private key in OpenSSH format, public key line)."""
    key = asyncssh.generate_private_key("ssh-ed25519", comment="brokeforge")
    return _export(key)


def import_private_key(text: str) -> tuple[str, str]:
    """Parse a private key (unencrypted) and return it with its public key line."""
    try:
        key = asyncssh.import_private_key(text)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise InvalidKey(f"not a usable private key: {exc}") from None
    return _export(key)


def fingerprint(public_key_line: str) -> str:
    return str(asyncssh.import_public_key(public_key_line).get_fingerprint("sha256"))


def _export(key: asyncssh.SSHKey) -> tuple[str, str]:
    private = key.export_private_key("openssh").decode()
    public = key.export_public_key("openssh").decode().strip()
    return private, public
