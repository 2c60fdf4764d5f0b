"""SQL for binhost targets (part of SqlStore)."""

from __future__ import annotations

import json
import threading
from contextlib import AbstractContextManager
from dataclasses import asdict, fields

import peewee as pw

from swarm.controller.store.models import BinhostTarget
from swarm.controller.store.records import BinhostRecord

BINHOST_FIELDS = [f.name for f in fields(BinhostRecord)]


def _binhost(row: BinhostTarget) -> BinhostRecord:
    values = {name: getattr(row, name) for name in BINHOST_FIELDS}
    values["networks"] = tuple(json.loads(row.networks))
    return BinhostRecord(**values)


class BinhostTables:
    db: pw.Database
    _lock: threading.Lock

    def _bound(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def put_binhost(self, binhost: BinhostRecord) -> None:
        row = asdict(binhost)
        row["networks"] = json.dumps(list(binhost.networks))
        update = [getattr(BinhostTarget, name) for name in BINHOST_FIELDS if name != "name"]
        with self._bound(), self.db.atomic():
            BinhostTarget.insert(row).on_conflict(
                conflict_target=[BinhostTarget.name], preserve=update
            ).execute()

    def list_binhosts(self) -> list[BinhostRecord]:
        with self._bound():
            return [_binhost(r) for r in BinhostTarget.select().order_by(BinhostTarget.name)]

    def delete_binhost(self, name: str) -> bool:
        with self._bound(), self.db.atomic():
            return bool(BinhostTarget.delete().where(BinhostTarget.name == name).execute())
