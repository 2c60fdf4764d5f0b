"""SQL for the healer: out-of-band access per drone, incidents and
controller settings (part of SqlStore)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, fields

import peewee as pw

from swarm.controller.store.models import DroneAccess, Incident, Setting
from swarm.controller.store.records import AccessRecord, IncidentRecord

ACCESS_FIELDS = [f.name for f in fields(AccessRecord)]
INCIDENT_FIELDS = [f.name for f in fields(IncidentRecord)]


def _access(row: DroneAccess) -> AccessRecord:
    return AccessRecord(**{name: getattr(row, name) for name in ACCESS_FIELDS})


def _incident(row: Incident) -> IncidentRecord:
    return IncidentRecord(**{name: getattr(row, name) for name in INCIDENT_FIELDS})


class HealthTables:
    db: pw.Database
    _lock: threading.Lock

    def _bound(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def put_access(self, access: AccessRecord) -> None:
        row = asdict(access)
        update = [getattr(DroneAccess, name) for name in ACCESS_FIELDS if name != "drone_id"]
        with self._bound(), self.db.atomic():
            DroneAccess.insert(row).on_conflict(
                conflict_target=[DroneAccess.drone_id], preserve=update
            ).execute()

    def list_access(self) -> list[AccessRecord]:
        with self._bound():
            return [_access(r) for r in DroneAccess.select().order_by(DroneAccess.drone_id)]

    def upsert_incidents(self, incidents: Sequence[IncidentRecord]) -> None:
        if not incidents:
            return
        rows = list({i.id: asdict(i) for i in incidents}.values())
        update = [getattr(Incident, name) for name in INCIDENT_FIELDS if name != "id"]
        with self._bound(), self.db.atomic():
            Incident.insert_many(rows).on_conflict(conflict_target=[Incident.id], preserve=update).execute()

    def list_incidents(
        self, *, drone_id: str | None = None, since: float | None = None, limit: int = 1000
    ) -> list[IncidentRecord]:
        with self._bound():
            query = Incident.select()
            if drone_id is not None:
                query = query.where(Incident.drone_id == drone_id)
            if since is not None:
                # Also incidents that began earlier and were still open at ``since``.
                query = query.where((Incident.recovered_at.is_null()) | (Incident.recovered_at >= since))
            rows = query.order_by(Incident.failed_at.desc(), Incident.id.desc()).limit(limit)
            return [_incident(r) for r in rows]

    def get_setting(self, key: str) -> str | None:
        with self._bound():
            row = Setting.get_or_none(Setting.key == key)
            return None if row is None else str(row.value)

    def set_setting(self, key: str, value: str) -> None:
        with self._bound(), self.db.atomic():
            Setting.insert(key=key, value=value).on_conflict(
                conflict_target=[Setting.key], preserve=[Setting.value]
            ).execute()
