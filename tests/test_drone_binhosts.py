"""Which binhosts a drone pulls dependencies from (controller/drone_binhosts.py):
the current release on the usable mirrors of its network, then staging.

In process: the list itself, and the real build queue sending it in a
StartBuild to a drone (a recording control stream, fakes/links.py) with
the mirrors' answers from a stand-in of binhosts.MirrorsAPI. Which entry
of PORTAGE_BINHOST Portage prefers is proved with real emerge by
tests/test_binhost_client.py for binrepos.conf priorities, the same
mechanism Portage turns PORTAGE_BINHOST into.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from swarm.controller.binhosts import BinhostTarget, MirrorsAPI, MirrorState, Status
from swarm.controller.builds import BuildQueue, BuildSettings
from swarm.controller.drone_binhosts import portage_binhost
from swarm.controller.events import EventLog
from swarm.controller.fleet import Fleet
from swarm.controller.persist import NodeWriter
from swarm.controller.store.runner import StoreRunner
from swarm.controller.store.sql import SqlStore

from fakes.builds import GraphResolver, StagedSet
from fakes.links import connect

pytestmark = pytest.mark.timeout(60)

STAGING = "http://ctl:8100/binhost/staging"
LOCAL = "http://ctl:8100/binhost"


def url_of(target: BinhostTarget) -> str:
    """As BinhostTargets.url_of, the controller's public tier at LOCAL."""
    return target.url or LOCAL


V = "v2026.12.05"


def target(name: str, networks: tuple[str, ...], priority: int = 0, url: str = "") -> BinhostTarget:
    if name == "controller":
        return BinhostTarget(name, "local", url, "", networks, priority)
    return BinhostTarget(name, "rsync", url or f"http://{name}:80/", "", networks, priority)


def state(name: str, release: str | None = V, status: Status = "healthy") -> MirrorState:
    return MirrorState(name, status, release, (release,) if release else (), 1.0, 1.0, "", 0, 0, None)


def pair(name: str, networks: tuple[str, ...], priority: int = 0) -> tuple[BinhostTarget, MirrorState]:
    return target(name, networks, priority), state(name)


class UsableMirrors:
    """binhosts.MirrorsAPI as far as the build queue reads it: usable() answers what the test set."""

    def __init__(self, usable: list[tuple[BinhostTarget, MirrorState]]) -> None:
        self.answer = usable

    def states(self) -> dict[str, MirrorState]:
        return {t.name: s for t, s in self.answer}

    async def sync(self, name: str | None, *, by: str) -> list[str]:
        return []

    def usable(self, release: str | None = None) -> list[tuple[BinhostTarget, MirrorState]]:
        return list(self.answer)


if TYPE_CHECKING:
    _mirrors: MirrorsAPI = UsableMirrors([])


def test_the_network_s_mirrors_come_first_by_priority_and_staging_last() -> None:
    usable = [
        pair("ts-b", ("tailscale",), 5),
        pair("lan-a", ("lan",), 1),
        pair("ts-a", ("tailscale", "wan"), 5),
        pair("ts-c", ("tailscale",), 9),
        pair("anywhere", ()),  # a fallback for nobody in particular: not a drone's
    ]
    assert portage_binhost(STAGING, "tailscale", usable, url_of).split() == [
        f"http://ts-c:80/releases/{V}/",
        f"http://ts-a:80/releases/{V}/",
        f"http://ts-b:80/releases/{V}/",
        STAGING,
    ]
    assert portage_binhost(STAGING, "lan", usable, url_of).split() == [
        f"http://lan-a:80/releases/{V}/",
        STAGING,
    ]


def test_no_mirror_of_the_network_no_network_or_no_release_is_staging_alone() -> None:
    usable = [pair("lan-a", ("lan",))]
    assert portage_binhost(STAGING, "wan", usable, url_of) == STAGING
    assert portage_binhost(STAGING, "", usable, url_of) == STAGING
    assert portage_binhost(STAGING, "lan", [], url_of) == STAGING
    assert (
        portage_binhost(STAGING, "lan", [(target("lan-a", ("lan",)), state("lan-a", None))], url_of)
        == STAGING
    )


def test_the_controller_s_own_binhost_is_its_public_url_when_it_serves_the_network() -> None:
    usable = [(target("controller", ("lan",), 3), state("controller"))]
    assert portage_binhost(STAGING, "lan", usable, url_of) == f"{LOCAL}/releases/{V}/ {STAGING}"


def test_a_drone_gets_the_release_on_its_network_s_mirror_in_its_start_build(tmp_path: Path) -> None:
    asyncio.run(a_drone_gets_the_release_on_its_network_s_mirror(tmp_path))


async def a_drone_gets_the_release_on_its_network_s_mirror(tmp_path: Path) -> None:
    runner = StoreRunner(SqlStore(f"sqlite:///{tmp_path}/builds.db"))
    await runner.open()
    events = EventLog(runner, buffer=100, retention=100)
    fleet = Fleet(events, y_threshold=8.0)
    writer = NodeWriter(fleet, runner, interval=1.0)
    await writer.start()
    graph = {"swarm-test/leaf-a-1": (), "swarm-test/leaf-b-1": ()}
    queue = BuildQueue(fleet, events, runner, GraphResolver(graph), StagedSet(), BuildSettings())
    await queue.start()
    try:
        # connect(): the drone says it is on network "lan".
        drone, link = connect(fleet, "drone-1")
        await writer.flush()
        assert drone.network == "lan"
        mirrors = UsableMirrors([pair("lan-a", ("lan",)), pair("ts-a", ("tailscale",))])
        queue.use_mirrors(mirrors, url_of)
        await queue.queue(["swarm-test/leaf-a-1"], name="one", by="test")
        deadline = time.monotonic() + 10
        while not any(m.HasField("start_build") for m in link.sent):
            assert time.monotonic() < deadline, "no StartBuild sent"
            await asyncio.sleep(0.005)
        [start] = [m.start_build for m in link.sent if m.HasField("start_build")]
        assert start.binhost_url == f"http://lan-a:80/releases/{V}/ {StagedSet.url}"

        queue.use_mirrors(None, url_of)
        assert queue.binhost_for("lan") == StagedSet.url
    finally:
        await queue.stop()
        await writer.stop()
        await runner.close()
