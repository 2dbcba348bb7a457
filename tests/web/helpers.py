"""Helpers shared by the page tests."""

from __future__ import annotations

import html
from html.parser import HTMLParser

from django.urls import reverse

from brokeforge.servers.models import Server
from tests.conftest import PASSWORD  # noqa: F401  (shared with page tests)


def action_url(server: Server, kind: str, action: str) -> str:
    return reverse(
        "database-action", kwargs={"name": server.name, "kind": kind, "action": action}
    )


def page_text(content: bytes) -> str:
    """The page with entities decoded, to look for messages as a person reads them."""
    return html.unescape(content.decode())


class _TextOnly(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def plain_text(content: bytes) -> str:
    """The page's visible words, tags dropped and whitespace collapsed."""
    parser = _TextOnly()
    parser.feed(content.decode())
    return " ".join("".join(parser.parts).split())
