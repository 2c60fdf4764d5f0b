"""Which failures are the controller's own, not its caller's.

A drone whose upload or report fails because the controller's database is
down or its data disk is full did nothing wrong: the call is answered
UNAVAILABLE (retry later) and nothing counts against the drone or the
package. ``own_fault`` is the one place that tells those failures apart.
"""

from __future__ import annotations

import errno

from swarm.controller.store.base import StoreUnavailable

# The data disk is full (or out of inodes, or over quota): writing will work
# again once space is freed, so this is a wait, not an error of the caller.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
DISK_FULL_WHY = "the controller's data disk is full"


def own_fault(exc: BaseException) -> str | None:
    """Why ``exc`` is the controller's own fault (its database unavailable,
    its disk full), in a few words for the caller; None if it is not.

    The store has already told its driver's errors apart (``Store.unavailable``):
    only what it raised as StoreUnavailable is a wait; any other database error
    is a bug, and the caller hears "internal error" like for any other bug."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        return DISK_FULL_WHY
    if isinstance(exc, StoreUnavailable):
        # SQLite says "database or disk is full"; PostgreSQL "No space left on device".
        reason = exc.reason.lower()
        if "full" in reason or "no space" in reason:
            return DISK_FULL_WHY
        return "the controller's database is unavailable"
    return None
