"""Which failures are the controller's own, not its caller's.

A drone whose upload or report fails because the controller's database is
down or its data disk is full did nothing wrong: the call is answered
UNAVAILABLE (retry later) and nothing counts against the drone or the
package. ``own_fault`` is the one place that tells those failures apart.
"""

from __future__ import annotations

import errno

import peewee as pw

from swarm.controller.store.sql import StoreError

# The data disk is full (or out of inodes, or over quota): writing will work
# again once space is freed, so this is a wait, not an error of the caller.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def own_fault(exc: BaseException) -> str | None:
    """Why ``exc`` is the controller's own fault (its database unavailable,
    its disk full), in a few words for the caller; None if it is not."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        return "the controller's data disk is full"
    # StoreError covers the store's own "unavailable" error, whichever module defines it.
    if isinstance(exc, (StoreError, pw.OperationalError, pw.InterfaceError)):
        if "full" in str(exc).lower():  # SQLite: "database or disk is full"
            return "the controller's data disk is full"
        return "the controller's database is unavailable"
    return None
