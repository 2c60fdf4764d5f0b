"""The storage interface. Every backend passes tests/test_store_contract.py.

Implementations are blocking; the controller calls them only through
``swarm.controller.store.runner.StoreRunner``, one thread for all
database work, so nothing blocks the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from swarm.controller.errors import Unavailable
from swarm.controller.store.records import (
    AccessRecord,
    ArtifactRecord,
    BinhostRecord,
    BuildRecord,
    CertRecord,
    DronePayloadRecord,
    EventRecord,
    IncidentRecord,
    JobRecord,
    NameRecord,
    NodeLive,
    NodeRecord,
    PackageStat,
    PayloadRecord,
    SessionRecord,
    TestBuildRecord,
    TestBuildTokenRecord,
    TokenRecord,
)


class StoreError(Exception):
    """The database cannot be opened or used."""


class StoreUnavailable(StoreError, Unavailable):
    """The database is there but cannot serve this call right now: the
    connection is lost (and not back yet), the server does not answer, or
    it refuses writes (locked, disk full, I/O error). Retry later; nothing
    is wrong with the request. Every boundary answers it as 503 /
    UNAVAILABLE, as ``errors.Unavailable``.

    ``reason``: what the driver said, for logs and the admin tier; the
    message that clients see (``message``) names no address or path.
    ``lost``: the connection is gone (the server is unreachable), rather
    than the database answering with an error."""

    def __init__(self, reason: str, *, lost: bool = False) -> None:
        what = "unreachable" if lost else "not taking writes"
        super().__init__(f"the database is {what} for now; try again later")
        self.reason = reason
        self.lost = lost


class Store(Protocol):
    def open(self) -> None:
        """Connect and migrate the schema forward to the current version."""

    def close(self) -> None: ...

    def unavailable(self, exc: BaseException) -> StoreUnavailable | None:
        """``exc`` (raised by a call) as StoreUnavailable if it means the
        database cannot serve calls for now: connection lost, server gone,
        locked, disk full, I/O error. None for any other error, a bug."""

    def reconnect(self) -> None:
        """Drop the connection, whatever state it is in, and open a new one;
        raises the driver's error if that fails."""

    def probe(self) -> None:
        """One small write: the database is reachable and takes writes."""

    def schema_version(self) -> int: ...

    def upsert_nodes(self, nodes: Sequence[NodeRecord]) -> None:
        """Insert or fully update each node, by id, in one transaction."""

    def update_nodes_live(self, nodes: Sequence[NodeLive]) -> None:
        """Update only the live columns of each node already stored, by id,
        in one transaction; an id not stored is skipped (its full row comes
        with ``upsert_nodes``)."""

    def list_nodes(self) -> list[NodeRecord]: ...

    def get_node(self, node_id: str) -> NodeRecord | None: ...

    def delete_node(self, node_id: str) -> bool: ...

    def add_events(self, events: Sequence[EventRecord]) -> None:
        """Insert events with the ids they already carry, in one transaction."""

    def list_events(
        self,
        *,
        after_id: int | None = None,
        since_ts: float | None = None,
        limit: int = 100,
        drone_id: str | None = None,
        types: Sequence[str] = (),
    ) -> list[EventRecord]:
        """Events in ascending id order. With after_id or since_ts, the
        first ``limit`` after that point; otherwise the newest ``limit``."""

    def max_event_id(self) -> int: ...

    def trim_events(self, keep: int) -> int:
        """Delete all but the newest ``keep`` events; return how many went."""

    def count_events(self, start: float, width: float, buckets: int) -> list[int]:
        """Events per bucket of ``width`` seconds from ``start``."""

    def add_token(self, token: TokenRecord) -> None: ...

    def get_token(self, token_id: str) -> TokenRecord | None: ...

    def list_tokens(self) -> list[TokenRecord]:
        """All tokens, newest first."""

    def count_live_tokens(self, now: float) -> int:
        """Tokens that could still be spent at ``now``: unused, unrevoked, unexpired."""

    def use_token(self, token_id: str, drone_id: str, now: float) -> bool:
        """Spend the token if it is unused, unrevoked and unexpired at ``now``;
        False if it was not (so two racing enrollments cannot both win)."""

    def revoke_token(self, token_id: str, now: float) -> bool:
        """Revoke an unused token; False if there is none such."""

    def add_certificate(self, cert: CertRecord) -> None: ...

    def list_certificates(self, valid_at: float) -> list[CertRecord]:
        """Certificates not expired at ``valid_at``, revoked ones included."""

    def revoke_certificates(self, drone_id: str, now: float) -> int:
        """Revoke every unrevoked certificate of the drone; how many."""

    def list_names(self) -> list[NameRecord]:
        """Every drone id's bound name."""

    def bind_name(self, record: NameRecord) -> None:
        """Bind the name to the drone id (replacing the id's old name); a
        drone id that held the name before loses it."""

    def upsert_sessions(self, sessions: Sequence[SessionRecord]) -> None: ...

    def list_sessions(self, limit: int = 100) -> list[SessionRecord]:
        """Newest first."""

    def upsert_jobs(self, jobs: Sequence[JobRecord]) -> None: ...

    def list_jobs(self, session_ids: Sequence[str] = ()) -> list[JobRecord]:
        """Jobs of the given sessions (all if none), oldest first."""

    def upsert_builds(self, builds: Sequence[BuildRecord]) -> None: ...

    def list_builds(
        self, *, limit: int = 100, job_id: str | None = None, finished: bool = False
    ) -> list[BuildRecord]:
        """Newest first."""

    def get_builds(self, ids: Sequence[str]) -> list[BuildRecord]:
        """The builds with these ids (unknown ones left out), in no order."""

    def add_artifact(self, artifact: ArtifactRecord) -> bool:
        """Record a stored artifact; False if that build already stored that file."""

    def get_artifact(self, build_id: str, filename: str) -> ArtifactRecord | None: ...

    def list_artifacts(self, cpv: str | None = None) -> list[ArtifactRecord]: ...

    def upsert_package_stats(self, stats: Sequence[PackageStat]) -> None: ...

    def list_package_stats(self) -> list[PackageStat]: ...

    def put_access(self, access: AccessRecord) -> None:
        """Insert or replace the drone's out-of-band access settings."""

    def list_access(self) -> list[AccessRecord]: ...

    def upsert_incidents(self, incidents: Sequence[IncidentRecord]) -> None:
        """Insert or fully update each incident, by id, in one transaction."""

    def list_incidents(
        self, *, drone_id: str | None = None, since: float | None = None, limit: int = 1000
    ) -> list[IncidentRecord]:
        """Newest first (by failed_at). With ``since``, only incidents still
        open then or recovered after it."""

    def get_setting(self, key: str) -> str | None: ...

    def set_setting(self, key: str, value: str) -> None: ...

    def put_binhost(self, binhost: BinhostRecord) -> None:
        """Insert or replace a binhost target, by name."""

    def list_binhosts(self) -> list[BinhostRecord]:
        """Every binhost target, by name."""

    def delete_binhost(self, name: str) -> bool:
        """Delete a binhost target; False if there was none such."""

    def put_test_builds(self, builds: Sequence[TestBuildRecord]) -> None:
        """Insert or fully replace each test build, by id, in one transaction
        (the last of an id given twice wins)."""

    def get_test_build(self, build_id: str) -> TestBuildRecord | None: ...

    def list_test_builds(self, *, limit: int = 100, states: Sequence[str] = ()) -> list[TestBuildRecord]:
        """Newest first (by queued_at); with ``states``, only those in one of them."""

    def prune_test_builds(self, before: float) -> list[TestBuildRecord]:
        """Delete the test builds that finished before ``before``, in one
        transaction; the ones deleted (their files are the caller's)."""

    def put_test_build_token(self, token: TestBuildTokenRecord) -> None:
        """Insert or fully replace a test-build token, by id."""

    def list_test_build_tokens(self) -> list[TestBuildTokenRecord]:
        """All test-build tokens, revoked ones included, newest first."""

    def add_payload(self, payload: PayloadRecord) -> bool:
        """Insert a new payload version; False if (kind, version) exists already."""

    def set_payload_state(self, kind: str, version: int, state: str) -> bool:
        """Change a version's state; False if there is no such version."""

    def list_payloads(self, kind: str | None = None) -> list[PayloadRecord]:
        """Payload versions (of one kind), by kind, newest version first."""

    def put_drone_payloads(self, records: list[DronePayloadRecord]) -> None:
        """Insert or replace each drone's payload of a kind, by (drone, kind), in one transaction."""

    def list_drone_payloads(self) -> list[DronePayloadRecord]:
        """Every drone's payloads, by drone id, then kind."""
