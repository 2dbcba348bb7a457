"""One event loop per worker process, shared by every operation it runs.

A worker runs several operations at once (`--concurrency`), each in a thread
of its own for the blocking parts (claim, result write), while their remote
work — SSH connections and commands — runs as coroutines on this single
loop. One loop lets operations on the same server share a pooled SSH
connection, and keeps a thousand idle channels cheap.

Without a started loop (tests that run an operation in-process), each
operation runs on a loop of its own, as `asyncio.run` gives it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_db: ThreadPoolExecutor | None = None
#: Threads (and so database connections) that every operation of a worker
#: process shares for its writes while the remote work runs; the count of
#: connections does not grow with `--concurrency`.
DB_THREADS = 8
#: When the loop last ran a callback (monotonic): the watchdog's proof
#: that the loop is not stuck.
_last_tick = 0.0
TICK_SECONDS = 0.5


def start() -> asyncio.AbstractEventLoop:
    """Start this process's shared loop in a daemon thread (once)."""
    global _loop, _db
    if _loop is not None:
        return _loop
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def tick() -> None:
        global _last_tick
        _last_tick = time.monotonic()
        loop.call_later(TICK_SECONDS, tick)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(tick)
        loop.call_soon(ready.set)
        loop.run_forever()

    threading.Thread(target=serve, name="bf-loop", daemon=True).start()
    ready.wait()
    _db = ThreadPoolExecutor(max_workers=DB_THREADS, thread_name_prefix="bf-db")
    _loop = loop
    return loop


def running() -> asyncio.AbstractEventLoop | None:
    return _loop


def db_executor() -> ThreadPoolExecutor | None:
    """The shared threads for database work, when the shared loop runs."""
    return _db


def stalled_for() -> float:
    """Seconds since the shared loop last ran anything (0 without a loop)."""
    if _loop is None:
        return 0.0
    return max(time.monotonic() - _last_tick - TICK_SECONDS, 0.0)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` to its end from a thread that is not the loop's."""
    loop = _loop
    if loop is None:
        return asyncio.run(coroutine)
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result()
