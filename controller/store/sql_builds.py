"""SQL for build sessions, jobs, builds, artifacts and learned build times
(part of SqlStore)."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, fields
from typing import Any

import peewee as pw

from swarm.controller.store.models import Artifact, Build, BuildSession, Job, PackageStat
from swarm.controller.store.records import ArtifactRecord, BuildRecord, JobRecord, SessionRecord
from swarm.controller.store.records import PackageStat as StatRecord

CHUNK = 200
LIST_COLUMNS = {"atoms", "deps", "failed_on"}


def _row(record: Any) -> dict[str, Any]:
    row = asdict(record)
    for name in LIST_COLUMNS & row.keys():
        row[name] = json.dumps(list(row[name]))
    return row


def _record(cls: Any, row: pw.Model) -> Any:
    values = {}
    for f in fields(cls):
        value = getattr(row, f.name)
        values[f.name] = tuple(json.loads(value or "[]")) if f.name in LIST_COLUMNS else value
    return cls(**values)


class BuildTables:
    db: pw.Database
    _lock: threading.Lock

    def _bound(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _upsert(self, model: type[pw.Model], records: Sequence[Any], key: str) -> None:
        if not records:
            return
        # Last record per key wins: PostgreSQL refuses to touch a row twice.
        rows = list({getattr(r, key): _row(r) for r in records}.values())
        update = [getattr(model, name) for name in rows[0] if name != key]
        with self._bound(), self.db.atomic():
            for start in range(0, len(rows), CHUNK):
                (
                    model.insert_many(rows[start : start + CHUNK])
                    .on_conflict(conflict_target=[getattr(model, key)], preserve=update)
                    .execute()
                )

    def upsert_sessions(self, sessions: Sequence[SessionRecord]) -> None:
        self._upsert(BuildSession, sessions, "id")

    def list_sessions(self, limit: int = 100) -> list[SessionRecord]:
        with self._bound():
            rows = BuildSession.select().order_by(BuildSession.created_at.desc()).limit(limit)
            return [_record(SessionRecord, r) for r in rows]

    def upsert_jobs(self, jobs: Sequence[JobRecord]) -> None:
        self._upsert(Job, jobs, "id")

    def list_jobs(self, session_ids: Sequence[str] = ()) -> list[JobRecord]:
        with self._bound():
            query = Job.select()
            if session_ids:
                query = query.where(Job.session_id.in_(list(session_ids)))
            return [_record(JobRecord, r) for r in query.order_by(Job.created_at, Job.id)]

    def upsert_builds(self, builds: Sequence[BuildRecord]) -> None:
        self._upsert(Build, builds, "id")

    def list_builds(
        self, *, limit: int = 100, job_id: str | None = None, finished: bool = False
    ) -> list[BuildRecord]:
        """Newest first."""
        with self._bound():
            query = Build.select()
            if job_id is not None:
                query = query.where(Build.job_id == job_id)
            if finished:
                query = query.where(Build.finished_at.is_null(False))
            rows = query.order_by(Build.created_at.desc(), Build.id).limit(limit)
            return [_record(BuildRecord, r) for r in rows]

    def get_builds(self, ids: Sequence[str]) -> list[BuildRecord]:
        """The builds with these ids (unknown ones left out), in no order."""
        wanted = list(dict.fromkeys(ids))
        found: list[BuildRecord] = []
        with self._bound():
            for start in range(0, len(wanted), CHUNK):
                rows = Build.select().where(Build.id.in_(wanted[start : start + CHUNK]))
                found += [_record(BuildRecord, r) for r in rows]
        return found

    def add_artifact(self, artifact: ArtifactRecord) -> bool:
        """Record a stored artifact; False if that build already stored that file."""
        with self._bound():
            # Rows affected, not the last row id: SQLite keeps reporting the
            # previous insert's id when the conflict skips this one.
            inserted = (
                Artifact.insert(asdict(artifact))
                .on_conflict(conflict_target=[Artifact.build_id, Artifact.filename], action="NOTHING")
                .as_rowcount()
                .execute()
            )
            return bool(inserted)

    def get_artifact(self, build_id: str, filename: str) -> ArtifactRecord | None:
        with self._bound():
            row = Artifact.get_or_none((Artifact.build_id == build_id) & (Artifact.filename == filename))
            return None if row is None else _record(ArtifactRecord, row)

    def list_artifacts(self, cpv: str | None = None) -> list[ArtifactRecord]:
        with self._bound():
            query = Artifact.select()
            if cpv is not None:
                query = query.where(Artifact.cpv == cpv)
            return [_record(ArtifactRecord, r) for r in query.order_by(Artifact.stored_at)]

    def upsert_package_stats(self, stats: Sequence[StatRecord]) -> None:
        self._upsert(PackageStat, stats, "cpn")

    def list_package_stats(self) -> list[StatRecord]:
        with self._bound():
            return [_record(StatRecord, r) for r in PackageStat.select()]
