"""Reading the event stream from tests: over ASGI, in the test's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from django.db import connection
from django.test import AsyncClient
from django.urls import reverse

from brokeforge.servers.models import Server


async def open_stream(client: AsyncClient, server: Server) -> AsyncIterator[bytes]:
    """A stream of `server`'s events, past its `retry:` line."""
    response = await client.get(reverse("server-events", args=[server.name]))
    assert response["Content-Type"] == "text/event-stream"
    stream = aiter(response.streaming_content)
    assert await asyncio.wait_for(anext(stream), timeout=10) == b"retry: 1000\n\n"
    return stream  # type: ignore[return-value]


async def next_text(stream: AsyncIterator[bytes]) -> str:
    return bytes(await asyncio.wait_for(anext(stream), timeout=10)).decode()


async def in_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`function` in another thread, whose database connection is closed
    after (an open one would keep PostgreSQL from dropping the test database)."""

    def call() -> Any:
        try:
            return function(*args, **kwargs)
        finally:
            connection.close()

    return await asyncio.to_thread(call)


def close_connection() -> None:
    """Close this thread's database connection (for `sync_to_async`)."""
    connection.close()
