"""What the build queue asks of Portage, for in-process tests of its
timers: a resolver over a graph the test gives (builds.Resolver) and a
staging binhost that holds what the test says was uploaded
(builds.Staging). tests/test_builds.py runs the real ones."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from swarm.controller.builds import Resolved, Resolver, Staging
from swarm.controller.errors import NotFound


class GraphResolver:
    """builds.Resolver: atoms are cpvs of ``graph`` (cpv -> its dependencies)."""

    def __init__(self, graph: Mapping[str, Sequence[str]]) -> None:
        self.graph = {cpv: tuple(deps) for cpv, deps in graph.items()}

    async def resolve(self, atoms: Sequence[str]) -> list[Resolved]:
        wanted: list[str] = []
        todo = list(atoms)
        while todo:
            cpv = todo.pop()
            if cpv not in self.graph:
                raise NotFound(f"no package matches {cpv!r}")
            if cpv not in wanted:
                wanted.append(cpv)
                todo.extend(self.graph[cpv])
        return [Resolved(cpv, self.graph[cpv]) for cpv in wanted]


class StagedSet:
    """builds.Staging: a package is staged once the test adds its cpv."""

    url = "http://127.0.0.1:9/binhost"

    def __init__(self) -> None:
        self.cpvs: set[str] = set()

    def has(self, cpv: str) -> bool:
        return cpv in self.cpvs


if TYPE_CHECKING:
    # mypy: the fakes have the real interfaces
    _resolver: Resolver = GraphResolver({})
    _staging: Staging = StagedSet()
