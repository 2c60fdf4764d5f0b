"""The storage interface. Every backend passes tests/test_store_contract.py.

Implementations are blocking; the controller calls them only through
``swarm.controller.store.runner.StoreRunner``, one thread for all
database work, so nothing blocks the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from swarm.controller.store.records import EventRecord, NodeRecord


class Store(Protocol):
    def open(self) -> None:
        """Connect and migrate the schema forward to the current version."""

    def close(self) -> None: ...

    def schema_version(self) -> int: ...

    def upsert_nodes(self, nodes: Sequence[NodeRecord]) -> None:
        """Insert or fully update each node, by id, in one transaction."""

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
