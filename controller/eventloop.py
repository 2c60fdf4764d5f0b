"""The event loop the controller runs on (config ``event_loop``).

uvloop by default: at scale the controller's loop thread mostly hands
gRPC's completions to their tasks, thousands a second, and uvloop's loop
(libuv's, in C) does that where asyncio's runs Python for each callback
(bench/README.md: at 2,000 drones the loop thread 10.8 -> 9.1 points of a
core). asyncio, Python's own, stays one flag away.

On uvloop, children are started with fork() rather than vfork():
``swarm.controller`` turns gRPC's fork handlers off for that reason.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

EVENT_LOOPS = ("uvloop", "asyncio")

T = TypeVar("T")


class LoopRunner(Protocol):
    def __call__(self, main: Coroutine[Any, Any, T], /) -> T: ...


def loop_runner(name: str) -> LoopRunner:
    """What runs a coroutine to its end on a new loop ``name`` (one of
    EVENT_LOOPS), as asyncio.run does; ImportError if uvloop is not installed."""
    if name == "asyncio":
        return asyncio.run
    import uvloop

    return uvloop.run


def describe_loop(loop: asyncio.AbstractEventLoop) -> str:
    """The loop's name for the log and the ready file: "uvloop 0.23.0", or
    "asyncio (_UnixSelectorEventLoop)"."""
    if type(loop).__module__.partition(".")[0] == "uvloop":
        try:
            return f"uvloop {importlib.metadata.version('uvloop')}"
        except importlib.metadata.PackageNotFoundError:
            return "uvloop"
    return f"asyncio ({type(loop).__name__})"
