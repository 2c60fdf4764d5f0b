"""Log lines a peer can cause, one per burst.

A client that loops (or an attacker) can trigger the same line thousands
of times a second; written each time it fills the disk. ``BurstLog``
writes the first line of a burst at once and, if more of the same kind
followed within the window, one line with their count when the window
ends (``bounds.Bursts`` does the counting). The reports of a burst thus
add up to its hits, and a burst that never ends costs two lines a window.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable

from swarm.controller.bounds import Bursts

DEFAULT_WINDOW = 10.0


class BurstLog:
    """``note(key, level, msg, *args)``: log ``msg`` if it starts a burst of
    ``key``, else count it towards the burst's summary."""

    def __init__(self, logger: logging.Logger, window: float = DEFAULT_WINDOW) -> None:
        self._logger = logger
        self._bursts = Bursts(window)

    def note(self, key: Hashable, level: int, msg: str, *args: object) -> None:
        window = self._bursts.window

        def summary(more: int) -> None:
            self._logger.log(level, "%s (and %d more like it within %gs)", msg % args, more, window)

        if self._bursts.hit(key, summary):
            self._logger.log(level, msg, *args)

    def close(self) -> None:
        """Cancel the pending summaries (stop: what they would have said is dropped)."""
        self._bursts.close()
