"""Encryption of secrets at rest (SSH private keys)."""

from __future__ import annotations

from functools import cache

from cryptography.fernet import Fernet

from brokeforge.home import read_secret


@cache
def _fernet() -> Fernet:
    return Fernet(read_secret("encryption_key").encode())


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    return _fernet().decrypt(token.encode()).decode()
