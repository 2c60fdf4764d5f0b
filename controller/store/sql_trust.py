"""SQL for join tokens and drone certificates (part of SqlStore)."""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from dataclasses import asdict, fields

import peewee as pw

from swarm.controller.store.models import Certificate, DroneName, JoinToken
from swarm.controller.store.records import CertRecord, NameRecord, TokenRecord

TOKEN_FIELDS = [f.name for f in fields(TokenRecord)]
CERT_FIELDS = [f.name for f in fields(CertRecord)]
NAME_FIELDS = [f.name for f in fields(NameRecord)]


class TrustTables:
    db: pw.Database
    _lock: threading.Lock

    def _bound(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def add_token(self, token: TokenRecord) -> None:
        with self._bound():
            JoinToken.insert(asdict(token)).execute()

    def get_token(self, token_id: str) -> TokenRecord | None:
        with self._bound():
            row = JoinToken.get_or_none(JoinToken.id == token_id)
            return None if row is None else TokenRecord(**{n: getattr(row, n) for n in TOKEN_FIELDS})

    def list_tokens(self) -> list[TokenRecord]:
        with self._bound():
            rows = JoinToken.select().order_by(JoinToken.created_at.desc(), JoinToken.id)
            return [TokenRecord(**{n: getattr(row, n) for n in TOKEN_FIELDS}) for row in rows]

    def count_live_tokens(self, now: float) -> int:
        with self._bound():
            return int(
                JoinToken.select()
                .where(
                    JoinToken.used_at.is_null()
                    & JoinToken.revoked_at.is_null()
                    & (JoinToken.expires_at > now)
                )
                .count()
            )

    def use_token(self, token_id: str, drone_id: str, now: float) -> bool:
        with self._bound():
            spent = (
                JoinToken.update(used_at=now, used_by=drone_id)
                .where(
                    (JoinToken.id == token_id)
                    & JoinToken.used_at.is_null()
                    & JoinToken.revoked_at.is_null()
                    & (JoinToken.expires_at > now)
                )
                .execute()
            )
            return bool(spent)

    def revoke_token(self, token_id: str, now: float) -> bool:
        with self._bound():
            revoked = (
                JoinToken.update(revoked_at=now)
                .where(
                    (JoinToken.id == token_id) & JoinToken.used_at.is_null() & JoinToken.revoked_at.is_null()
                )
                .execute()
            )
            return bool(revoked)

    def add_certificate(self, cert: CertRecord) -> None:
        with self._bound():
            Certificate.insert(asdict(cert)).execute()

    def list_certificates(self, valid_at: float) -> list[CertRecord]:
        with self._bound():
            rows = (
                Certificate.select().where(Certificate.not_after > valid_at).order_by(Certificate.issued_at)
            )
            return [CertRecord(**{n: getattr(row, n) for n in CERT_FIELDS}) for row in rows]

    def revoke_certificates(self, drone_id: str, now: float) -> int:
        with self._bound():
            return int(
                Certificate.update(revoked_at=now)
                .where((Certificate.drone_id == drone_id) & Certificate.revoked_at.is_null())
                .execute()
            )

    def list_names(self) -> list[NameRecord]:
        with self._bound():
            rows = DroneName.select().order_by(DroneName.name)
            return [NameRecord(**{n: getattr(row, n) for n in NAME_FIELDS}) for row in rows]

    def bind_name(self, record: NameRecord) -> None:
        with self._bound(), self.db.atomic():
            # The caller has decided that whoever held the name before gives it up.
            DroneName.delete().where(
                (DroneName.name == record.name) & (DroneName.drone_id != record.drone_id)
            ).execute()
            DroneName.insert(asdict(record)).on_conflict(
                conflict_target=[DroneName.drone_id],
                update={
                    DroneName.name: record.name,
                    DroneName.bound_at: record.bound_at,
                    DroneName.bound_by: record.bound_by,
                },
            ).execute()
