"""SQL for payloads: uploaded versions and each drone's (part of SqlStore)."""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from dataclasses import asdict, fields

import peewee as pw

from swarm.controller.store.models import DronePayload, PayloadVersion
from swarm.controller.store.records import DronePayloadRecord, PayloadRecord

PAYLOAD_FIELDS = [f.name for f in fields(PayloadRecord)]
DRONE_PAYLOAD_FIELDS = [f.name for f in fields(DronePayloadRecord)]


def _payload(row: PayloadVersion) -> PayloadRecord:
    return PayloadRecord(**{name: getattr(row, name) for name in PAYLOAD_FIELDS})


def _drone_payload(row: DronePayload) -> DronePayloadRecord:
    return DronePayloadRecord(**{name: getattr(row, name) for name in DRONE_PAYLOAD_FIELDS})


class PayloadTables:
    db: pw.Database
    _lock: threading.Lock

    def _bound(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def add_payload(self, payload: PayloadRecord) -> bool:
        """Insert a new version; False if (kind, version) exists already."""
        with self._bound(), self.db.atomic():
            if PayloadVersion.get_or_none(
                (PayloadVersion.kind == payload.kind) & (PayloadVersion.version == payload.version)
            ):
                return False
            PayloadVersion.insert(asdict(payload)).execute()
            return True

    def set_payload_state(self, kind: str, version: int, state: str) -> bool:
        with self._bound(), self.db.atomic():
            changed = (
                PayloadVersion.update(state=state)
                .where((PayloadVersion.kind == kind) & (PayloadVersion.version == version))
                .execute()
            )
            return bool(changed)

    def list_payloads(self, kind: str | None = None) -> list[PayloadRecord]:
        """By kind, newest version first."""
        with self._bound():
            query = PayloadVersion.select()
            if kind is not None:
                query = query.where(PayloadVersion.kind == kind)
            order = (PayloadVersion.kind, PayloadVersion.version.desc())
            return [_payload(r) for r in query.order_by(*order)]

    def put_drone_payloads(self, records: list[DronePayloadRecord]) -> None:
        """Insert or replace each, by (drone, kind), in one transaction."""
        if not records:
            return
        update = [getattr(DronePayload, n) for n in DRONE_PAYLOAD_FIELDS if n not in ("drone_id", "kind")]
        with self._bound(), self.db.atomic():
            for record in records:
                DronePayload.insert(asdict(record)).on_conflict(
                    conflict_target=[DronePayload.drone_id, DronePayload.kind], preserve=update
                ).execute()

    def list_drone_payloads(self) -> list[DronePayloadRecord]:
        """By drone, then kind."""
        with self._bound():
            order = (DronePayload.drone_id, DronePayload.kind)
            return [_drone_payload(r) for r in DronePayload.select().order_by(*order)]
