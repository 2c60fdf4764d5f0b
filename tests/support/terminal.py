"""The admin's end of a websocket terminal (/ws/ssh/{drone}), for the
terminal tests: keystrokes out, output gathered, JSON messages kept."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp


class Term:
    """The admin's end: keystrokes out, output gathered, JSON messages kept."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.out = bytearray()
        self.messages: list[dict[str, Any]] = []
        self.session: dict[str, Any] = {}

    async def _next(self, timeout: float) -> bool:
        """One message; False once the websocket is closed (True after a quiet ``timeout``)."""
        try:
            msg = await self.ws.receive(timeout=timeout)
        except TimeoutError:
            return True
        if msg.type == aiohttp.WSMsgType.BINARY:
            self.out += msg.data
        elif msg.type == aiohttp.WSMsgType.TEXT:
            message = json.loads(msg.data)
            self.messages.append(message)
            if message["type"] == "session":
                self.session = message
        else:
            return False  # closed
        return True

    async def until(self, pattern: str | bytes, timeout: float = 10.0, since: int = 0) -> int:
        """Read until the output (from offset ``since``) matches; returns the end of the match."""
        needle = re.compile(pattern.encode() if isinstance(pattern, str) else pattern)
        deadline = time.monotonic() + timeout
        while (found := needle.search(self.out, since)) is None:
            # Matches are short: only the new output (and a little before it) is searched again.
            since = max(since, len(self.out) - 256)
            left = deadline - time.monotonic()
            if left <= 0 or not await self._next(left):
                raise AssertionError(f"no {pattern!r} in the output; its end: {bytes(self.out[-500:])!r}")
        return found.end()

    async def message(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for message in self.messages:
                if message["type"] == kind:
                    return message
            left = deadline - time.monotonic()
            if left <= 0 or not await self._next(left):
                raise AssertionError(f"no {kind} message; got {self.messages}")

    async def closed(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while await self._next(max(0.01, deadline - time.monotonic())):
            pass

    async def type(self, text: str) -> None:
        await self.ws.send_bytes(text.encode())

    async def run(self, command: str, expect: str, timeout: float = 10.0) -> int:
        """Type a command line and read until ``expect`` appears after it."""
        start = len(self.out)
        await self.type(command + "\r")
        return await self.until(expect, timeout, since=start)


@contextlib.asynccontextmanager
async def open_terminal(url: str, admin_key: str) -> AsyncIterator[Term]:
    """A websocket terminal at ``url`` (query included), once its session message came."""
    async with (
        aiohttp.ClientSession(headers={"X-Admin-Key": admin_key}) as http_session,
        http_session.ws_connect(url, autoping=True) as ws,
    ):
        term = Term(ws)
        await term.message("session")
        yield term
