"""Forward-only schema migrations.

Each migration is (version, name, function). ``migrate`` applies, in one
transaction each, every migration newer than the version recorded in
``schema_version``. A database newer than this code is refused rather
than guessed at.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import peewee as pw

from swarm.controller.store.models import (
    Artifact,
    BinhostTarget,
    Build,
    BuildSession,
    Certificate,
    DroneAccess,
    DroneName,
    DronePayload,
    Event,
    Incident,
    Job,
    JoinToken,
    Node,
    PackageStat,
    PayloadVersion,
    SchemaVersion,
    Setting,
    TestBuild,
    TestBuildToken,
)

log = logging.getLogger(__name__)

Migration = tuple[int, str, Callable[[pw.Database], None]]


def _initial(db: pw.Database) -> None:
    # Tables as the models define them today: a later migration that alters
    # Node or Event must first freeze this step's definitions.
    db.create_tables([Node, Event])


def _trust(db: pw.Database) -> None:
    db.create_tables([JoinToken, Certificate])


def _builds(db: pw.Database) -> None:
    db.create_tables([BuildSession, Job, Build, Artifact, PackageStat])


def _healing(db: pw.Database) -> None:
    db.create_tables([DroneAccess, Incident, Setting])


def _names(db: pw.Database) -> None:
    db.create_tables([DroneName])


def _binhosts(db: pw.Database) -> None:
    db.create_tables([BinhostTarget])


def _test_builds(db: pw.Database) -> None:
    db.create_tables([TestBuild, TestBuildToken])


def _payloads(db: pw.Database) -> None:
    db.create_tables([PayloadVersion, DronePayload])


MIGRATIONS: list[Migration] = [
    (1, "nodes and events", _initial),
    (2, "join tokens and drone certificates", _trust),
    (3, "build sessions, jobs, builds, artifacts, package stats", _builds),
    (4, "drone access, incidents, settings", _healing),
    (5, "drone names bound to drone ids", _names),
    (6, "binhost targets", _binhosts),
    (7, "test builds and their tokens", _test_builds),
    (8, "payload versions and the payloads of each drone", _payloads),
]

LATEST = MIGRATIONS[-1][0]


class SchemaTooNew(Exception):
    """The database was written by a newer controller."""


def current_version(db: pw.Database) -> int:
    if not db.table_exists(SchemaVersion._meta.table_name):
        return 0
    row = SchemaVersion.select(pw.fn.MAX(SchemaVersion.version)).scalar()
    return int(row or 0)


def migrate(db: pw.Database, migrations: list[Migration] | None = None) -> int:
    steps = MIGRATIONS if migrations is None else migrations
    db.create_tables([SchemaVersion], safe=True)
    version = current_version(db)
    newest = steps[-1][0] if steps else 0
    if version > newest:
        raise SchemaTooNew(f"database schema version {version} is newer than this controller ({newest})")
    for number, name, apply in steps:
        if number <= version:
            continue
        log.info("applying schema migration %d: %s", number, name)
        with db.atomic():
            apply(db)
            SchemaVersion.create(version=number, name=name, applied_at=time.time())
        version = number
    return version
