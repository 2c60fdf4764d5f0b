"""Which failures are the controller's own (faults.own_fault): a drone is
told to retry, and nothing counts against it or its package."""

from __future__ import annotations

import errno

import peewee as pw

from swarm.controller.errors import InvalidArgument
from swarm.controller.faults import DISK_FULL_WHY, own_fault
from swarm.controller.store.base import StoreUnavailable


def test_a_full_disk_is_told_apart_from_a_database_away() -> None:
    assert own_fault(OSError(errno.ENOSPC, "No space left on device")) == DISK_FULL_WHY
    assert own_fault(OSError(errno.EDQUOT, "Disk quota exceeded")) == DISK_FULL_WHY
    # What the store raises for SQLite's and PostgreSQL's full disks.
    assert own_fault(StoreUnavailable("writes failing: database or disk is full")) == DISK_FULL_WHY
    assert own_fault(StoreUnavailable("writes failing: could not extend file: No space left on device")) == (
        DISK_FULL_WHY
    )
    away = "the controller's database is unavailable"
    assert (
        own_fault(StoreUnavailable("database unreachable: server closed the connection", lost=True)) == away
    )
    assert own_fault(StoreUnavailable("writes failing: database is locked")) == away


def test_other_failures_are_not_the_controllers_own() -> None:
    # A driver error the store did not call unavailable is a bug: "internal error".
    assert own_fault(pw.OperationalError("no such column: x")) is None
    assert own_fault(OSError(errno.EACCES, "Permission denied")) is None
    assert own_fault(InvalidArgument("bad atom")) is None
    assert own_fault(ValueError("full")) is None
