"""SQL for test builds and their tokens (part of SqlStore)."""

from __future__ import annotations

import json
import threading
import typing
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, fields

import peewee as pw

from swarm.controller.store.models import TestBuild, TestBuildToken
from swarm.controller.store.records import TestBuildRecord, TestBuildTokenRecord

BUILD_FIELDS = tuple(f.name for f in fields(TestBuildRecord))
BUILD_UPDATES = tuple(name for name in BUILD_FIELDS if name != "id")
TOKEN_FIELDS = [f.name for f in fields(TestBuildTokenRecord)]
LISTS = ("use", "packages")  # tuples kept as JSON lists
LIST_COLUMNS = tuple(BUILD_FIELDS.index(name) for name in LISTS)


def _build(row: TestBuild) -> TestBuildRecord:
    values = {name: getattr(row, name) for name in BUILD_FIELDS}
    for name in LISTS:
        values[name] = tuple(json.loads(values[name]))
    return TestBuildRecord(**values)


def _build_row(build: TestBuildRecord) -> list[object]:
    row: list[object] = [getattr(build, name) for name in BUILD_FIELDS]
    for index in LIST_COLUMNS:
        row[index] = json.dumps(list(typing.cast(tuple[str, ...], row[index])))
    return row


def _token(row: TestBuildToken) -> TestBuildTokenRecord:
    return TestBuildTokenRecord(**{name: getattr(row, name) for name in TOKEN_FIELDS})


class TestBuildTables:
    __test__ = False  # not a pytest class, whatever its name

    db: pw.Database
    _lock: threading.Lock

    def _bound(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _insert_many(
        self,
        model: type[pw.Model],
        columns: tuple[str, ...],
        rows: Sequence[Sequence[object]],
        update: tuple[str, ...] = (),
    ) -> None:
        raise NotImplementedError

    def put_test_builds(self, builds: Sequence[TestBuildRecord]) -> None:
        if not builds:
            return
        # The last of an id wins, as in one upsert each (PostgreSQL refuses an
        # upsert that touches the same row twice). A prepared statement: peewee's
        # query building cost ~100 us a row on the database thread, holding the
        # GIL the event loop answering the requests needs; this ~15 us.
        rows = [_build_row(build) for build in {b.id: b for b in builds}.values()]
        self._insert_many(TestBuild, BUILD_FIELDS, rows, BUILD_UPDATES)

    def get_test_build(self, build_id: str) -> TestBuildRecord | None:
        with self._bound():
            row = TestBuild.get_or_none(TestBuild.id == build_id)
            return None if row is None else _build(row)

    def list_test_builds(self, *, limit: int = 100, states: Sequence[str] = ()) -> list[TestBuildRecord]:
        with self._bound():
            query = TestBuild.select()
            if states:
                query = query.where(TestBuild.state.in_(list(states)))
            query = query.order_by(TestBuild.queued_at.desc(), TestBuild.id.desc()).limit(limit)
            return [_build(row) for row in query]

    def prune_test_builds(self, before: float) -> list[TestBuildRecord]:
        with self._bound(), self.db.atomic():
            old = TestBuild.finished_at.is_null(False) & (TestBuild.finished_at < before)
            gone = [_build(row) for row in TestBuild.select().where(old).order_by(TestBuild.finished_at)]
            if gone:
                TestBuild.delete().where(TestBuild.id.in_([b.id for b in gone])).execute()
            return gone

    def put_test_build_token(self, token: TestBuildTokenRecord) -> None:
        update = [getattr(TestBuildToken, name) for name in TOKEN_FIELDS if name != "id"]
        with self._bound(), self.db.atomic():
            TestBuildToken.insert(asdict(token)).on_conflict(
                conflict_target=[TestBuildToken.id], preserve=update
            ).execute()

    def list_test_build_tokens(self) -> list[TestBuildTokenRecord]:
        with self._bound():
            query = TestBuildToken.select().order_by(TestBuildToken.created_at.desc(), TestBuildToken.id)
            return [_token(row) for row in query]
