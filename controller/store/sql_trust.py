"""SQL for join tokens and drone certificates (part of SqlStore)."""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from dataclasses import asdict, fields

import peewee as pw

from swarm.controller.store.models import Certificate, JoinToken
from swarm.controller.store.records import CertRecord, TokenRecord

TOKEN_FIELDS = [f.name for f in fields(TokenRecord)]
CERT_FIELDS = [f.name for f in fields(CertRecord)]


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
