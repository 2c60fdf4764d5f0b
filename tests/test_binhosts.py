"""Binhost targets in process: what validate() takes and refuses (hostile
values included), the binhosts file, the targets kept in a real store
(SQLite) with the file winning at every start, and binrepos.conf answers
as stock Portage reads them (its own config loader parses the text)."""

from __future__ import annotations

import asyncio
import configparser
from pathlib import Path
from typing import Any

import pytest

from swarm.config import ConfigError
from swarm.controller import binrepos
from swarm.controller.binhosts import (
    LOCAL_NAME,
    NETWORKS_MAX,
    PRIORITY_MAX,
    BinhostTarget,
    BinhostTargets,
    MirrorState,
    destination_of,
    load_file,
    validate,
)
from swarm.controller.errors import FailedPrecondition, InvalidArgument, NotFound
from swarm.controller.events import EventLog
from swarm.controller.oob import SshTarget
from swarm.controller.store.runner import StoreRunner
from swarm.controller.store.sql import SqlStore

MIRROR = {"url": "https://mirror.lan/swarm/", "destination": "push@mirror.lan:2222:/srv/swarm/"}


def mirror(**changes: Any) -> dict[str, Any]:
    return {**MIRROR, **changes}


def refused(name: str, fields: dict[str, Any]) -> str:
    with pytest.raises(InvalidArgument) as caught:
        validate(name, fields, by="t", now=1.0)
    return caught.value.message


# -- validate ------------------------------------------------------------------------------


def test_a_mirror_is_normalized_and_its_destination_parsed() -> None:
    target = validate("lan", mirror(networks=["lan", "wg0", "lan"], priority=7), by="admin:a", now=5.0)
    assert target == BinhostTarget(
        name="lan",
        kind="rsync",
        url="https://mirror.lan/swarm",
        destination="push@mirror.lan:2222:/srv/swarm",
        networks=("lan", "wg0"),
        priority=7,
        enabled=True,
        updated_at=5.0,
        updated_by="admin:a",
    )
    parsed = destination_of(target)
    assert parsed.ssh == SshTarget("mirror.lan", "push", 2222) and parsed.path == "/srv/swarm"
    v6 = validate("v6", mirror(destination="[fd00::5]:/srv/b"), by="t", now=1.0)
    assert destination_of(v6).ssh == SshTarget("fd00::5") and v6.destination == "[fd00::5]:/srv/b"


def test_the_local_target_takes_only_url_networks_and_priority() -> None:
    local = validate(LOCAL_NAME, {"networks": ["lan"], "priority": 3}, by="t", now=1.0)
    assert (local.kind, local.url, local.destination, local.enabled) == ("local", "", "", True)
    assert validate(LOCAL_NAME, {"url": "http://ctl.lan:8100/binhost/"}, by="t", now=1.0).url == (
        "http://ctl.lan:8100/binhost"
    )
    assert "no destination" in refused(LOCAL_NAME, {"destination": "h:/srv/x"})
    assert "kind is local" in refused(LOCAL_NAME, {"kind": "rsync"})
    assert "cannot be disabled" in refused(LOCAL_NAME, {"enabled": False})
    assert "only controller" in refused("lan", {"kind": "local", "url": "http://x"})
    with pytest.raises(FailedPrecondition):
        destination_of(local)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"destination": "m:/srv/x"}, "url is required"),
        ({"url": "http://m.lan"}, "destination is required"),
        (mirror(url="ftp://m.lan/x"), "http:// or https://"),
        (mirror(url="http:///path"), "no host"),
        (mirror(url="http://user:pw@m.lan/x"), "user name or password"),
        (mirror(url="http://m.lan/x?a=1"), "query"),
        (mirror(url="http://m.lan/x#top"), "fragment"),
        (mirror(url="http://m.lan/x\n[evil]\nsync-uri = http://evil"), "control characters"),
        (mirror(url="http://m.lan/a b"), "spaces"),
        (mirror(url="http://m.lan/a\u2028[evil]"), "ASCII"),
        (mirror(url="http://m.lan:99999/"), "Port out of range"),
        (mirror(url="http://m.lan/../etc"), "'..'"),
        (mirror(destination="-oProxyCommand=sh -c id:/srv/x"), "spaces"),
        (mirror(destination="-oProxyCommand=id:/srv/x"), "invalid host name"),
        (mirror(destination="m.lan;reboot:/srv/x"), "invalid host name"),
        (mirror(destination="$(id)@m.lan:/srv/x"), "invalid user name"),
        (mirror(destination="m.lan:/srv/x;rm -rf /"), "spaces"),
        (mirror(destination="m.lan:/srv/$(id)"), "letters, digits"),
        (mirror(destination="m.lan:/srv/`id`"), "letters, digits"),
        (mirror(destination="m.lan:/srv/../etc"), "'..'"),
        (mirror(destination="m.lan:/srv/./x"), "'.'"),
        (mirror(destination="m.lan:/"), "not / itself"),
        (mirror(destination="m.lan:srv/x"), "absolute"),
        (mirror(destination="m.lan"), "absolute"),
        (mirror(destination="m.lan:/srv/x\n[evil]"), "control characters"),
        (mirror(destination="m.lan:70000:/srv/x"), "port"),
        (mirror(destination="fd00::5:/srv/x"), "brackets"),
        (mirror(networks="lan"), "a list"),
        (mirror(networks=["-lan"]), "network '-lan'"),
        (mirror(networks=["lan\n"]), "network 'lan\\n'"),
        (mirror(networks=[f"n{i}" for i in range(NETWORKS_MAX + 1)]), f"at most {NETWORKS_MAX}"),
        (mirror(priority=PRIORITY_MAX + 1), "priority"),
        (mirror(priority=-1), "priority"),
        (mirror(priority=True), "priority"),
        (mirror(priority="5"), "priority"),
        (mirror(enabled="yes"), "true or false"),
        (mirror(kind="ftp"), "kind must be"),
        (mirror(url=5), "url must be a string"),
        (mirror(url="https://mirror.lan/swarm binhost/"), "url must not contain spaces"),
        (mirror(owner="me"), "unknown field(s) owner"),
    ],
)
def test_hostile_and_malformed_values_are_refused_with_the_reason(
    fields: dict[str, Any], reason: str
) -> None:
    assert reason in refused("lan", fields)


@pytest.mark.parametrize("name", ["", "Lan", "1lan", "lan_2", "a" * 33, "lan\n", "../x", "-x", "sync"])
def test_bad_names_are_refused(name: str) -> None:
    assert "binhost name" in refused(name, MIRROR)


# -- the file --------------------------------------------------------------------------------


def test_the_file_is_read_and_a_bad_table_named(tmp_path: Path) -> None:
    good = tmp_path / "binhosts.toml"
    good.write_text(
        '[binhosts.controller]\nnetworks = ["lan"]\n\n'
        '[binhosts.tail]\nurl = "http://m.ts.net/b"\ndestination = "m.ts.net:/srv/b"\n'
        'networks = ["tailscale"]\npriority = 5\n'
    )
    assert set(load_file(good)) == {LOCAL_NAME, "tail"}
    for text, reason in (
        ('[binhosts.tail]\nurl = "http://m/b"\ndestination = "m:/srv/../b"\n', "binhosts.tail: destination"),
        ("[mirrors.tail]\n", "unknown table(s) mirrors"),
        ("binhosts = 3\n", "must be a table"),
        ("[binhosts]\ntail = 3\n", "binhosts.tail must be a table"),
        ("[binhosts.tail\n", "not valid TOML"),
    ):
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ConfigError) as caught:
            load_file(bad)
        assert str(bad) in str(caught.value) and reason in str(caught.value), caught.value


# -- the targets, stored -------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return self.now


async def _targets(
    url: str, file: dict[str, dict[str, Any]], clock: Clock
) -> tuple[StoreRunner, EventLog, BinhostTargets]:
    runner = StoreRunner(SqlStore(url))
    await runner.open()
    events = EventLog(runner, buffer=100, retention=10_000)
    await events.start()
    targets = BinhostTargets(runner, events, file_targets=file, clock=clock)  # type: ignore[arg-type]
    await targets.start()
    return runner, events, targets


async def _close(runner: StoreRunner, events: EventLog) -> None:
    await events.stop()
    await runner.close()


def test_targets_are_kept_in_the_store_and_the_file_wins_at_every_start(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/swarm.db"
    clock = Clock()
    file = {"tail": mirror(networks=["tailscale"], priority=5)}

    async def first_run() -> tuple[list[BinhostTarget], list[str], list[tuple[str, str]]]:
        runner, events, targets = await _targets(url, file, clock)
        changed: list[str] = []
        unsubscribe = targets.subscribe(changed.append)
        assert [t.name for t in targets.list()] == [LOCAL_NAME, "tail"]
        assert targets.get(LOCAL_NAME).updated_by == ""  # the default, never saved
        await targets.put("lan", mirror(url="http://m.lan/b", networks=["lan"]), by="admin:a")
        await targets.put("tail", mirror(priority=9), by="admin:a")  # the file puts it back at the next start
        await targets.put(LOCAL_NAME, {"networks": ["lan"]}, by="admin:a")
        await targets.put("gone", mirror(), by="admin:a")
        await targets.delete("gone", by="admin:b")
        with pytest.raises(FailedPrecondition):
            await targets.delete(LOCAL_NAME, by="admin:b")
        with pytest.raises(NotFound):
            await targets.delete("gone", by="admin:b")
        with pytest.raises(InvalidArgument):
            await targets.put("lan", mirror(destination="x:/a/../b"), by="admin:a")
        unsubscribe()
        await targets.put("after", mirror(), by="admin:a")
        await events.flush()
        saved = await events.query(types=("binhost_saved", "binhost_deleted"), limit=100)
        await _close(runner, events)
        return targets.list(), changed, [(e.type, e.data["by"]) for e in saved]

    listed, changed, saved = asyncio.run(first_run())
    assert [t.name for t in listed] == [LOCAL_NAME, "after", "lan", "tail"]
    assert changed == ["lan", "tail", LOCAL_NAME, "gone", "gone"]
    assert ("binhost_saved", "config file") in saved and ("binhost_deleted", "admin:b") in saved
    assert saved.count(("binhost_saved", "admin:a")) == 5

    clock.now = 2000.0

    async def second_run() -> list[BinhostTarget]:
        runner, events, targets = await _targets(url, file, clock)
        await _close(runner, events)
        return targets.list()

    again = {t.name: t for t in asyncio.run(second_run())}
    assert again["tail"].priority == 5 and again["tail"].updated_by == "config file"
    assert again["tail"].updated_at == 2000.0
    assert again["lan"].networks == ("lan",) and again["lan"].updated_by == "admin:a"
    assert again[LOCAL_NAME].networks == ("lan",)

    async def third_run() -> float:
        runner, events, targets = await _targets(url, file, clock)
        await _close(runner, events)
        return targets.get("tail").updated_at

    clock.now = 3000.0
    assert asyncio.run(third_run()) == 2000.0  # unchanged by the file: not saved again


# -- binrepos.conf -----------------------------------------------------------------------------


def state(name: str, status: str = "healthy") -> MirrorState:
    return MirrorState(name, status, "v2026.12.05", ("v2026.12.05",), None, None, "", 0, 0, None)  # type: ignore[arg-type]


def target(name: str, networks: tuple[str, ...] = (), priority: int = 0, url: str = "") -> BinhostTarget:
    return BinhostTarget(name, "rsync", url or f"http://{name}.example/b%20x", "h:/srv", networks, priority)


ENTRIES = [
    (BinhostTarget(LOCAL_NAME, "local", "http://ctl:8100/binhost", priority=0), state(LOCAL_NAME)),
    (target("zeta", ("lan",), 1), state("zeta")),
    (target("alpha", ("lan",), 1), state("alpha")),
    (target("top", ("lan",), 50), state("top")),
    (target("tail", ("tailscale",), 900), state("tail")),
    (target("anyone", (), 10), state("anyone")),
]


def portage_order(text: str, tmp_path: Path) -> list[tuple[str, str, bool]]:
    """The repositories in the order Portage reads them: its own loader of
    binrepos.conf, sections read from the highest priority down."""
    from portage.binrepo.config import BinRepoConfigLoader

    path = tmp_path / "binrepos.conf"
    path.write_text(text)
    settings = {"EPREFIX": str(tmp_path), "EROOT": str(tmp_path), "PORTAGE_CONFIGROOT": "/", "ROOT": "/"}
    loader = BinRepoConfigLoader((str(path),), settings)
    return [(r.name, r.sync_uri, r.verify_signature) for r in reversed(list(loader.values()))]


def test_the_networks_binhosts_come_first_then_the_rest_by_priority(tmp_path: Path) -> None:
    text = binrepos.render(ENTRIES, network="lan", now=0.0, left_out=[("far", "stale")])
    order = portage_order(text, tmp_path)
    assert [name for name, _, _ in order] == [
        "swarm-top",
        "swarm-alpha",
        "swarm-zeta",
        "swarm-tail",
        "swarm-anyone",
        f"swarm-{LOCAL_NAME}",
    ]
    assert all(verify for _, _, verify in order)
    assert order[1][1] == "http://alpha.example/b%20x/current"  # % survives Portage's interpolation
    assert order[-1][1] == "http://ctl:8100/binhost/current"
    assert "# network: lan" in text and "far (stale)" in text


def test_without_a_network_every_binhost_is_a_fallback_and_a_pin_names_the_release(tmp_path: Path) -> None:
    text = binrepos.render(ENTRIES, network=None, release="v2026.12.05", now=0.0)
    order = portage_order(text, tmp_path)
    assert [name for name, _, _ in order] == [
        "swarm-v2026.12.05-tail",
        "swarm-v2026.12.05-top",
        "swarm-v2026.12.05-anyone",
        "swarm-v2026.12.05-alpha",
        "swarm-v2026.12.05-zeta",
        f"swarm-v2026.12.05-{LOCAL_NAME}",
    ]
    assert order[0][1] == "http://tail.example/b%20x/releases/v2026.12.05"
    # A network nobody serves: the same order as none.
    assert portage_order(binrepos.render(ENTRIES, network="dmz", now=0.0), tmp_path)[0][0] == "swarm-tail"


def test_the_answer_is_plain_ini_with_one_section_per_binhost() -> None:
    text = binrepos.render(ENTRIES[:2], network="lan", now=0.0)
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    assert parser.sections() == ["swarm-zeta", f"swarm-{LOCAL_NAME}"]
    assert dict(parser["swarm-zeta"]) == {
        "sync-uri": "http://zeta.example/b%%20x/current/",
        "priority": "2",
        "verify-signature": "true",
    }
    empty = binrepos.render([], network="lan", now=0.0, left_out=[("m", "unreachable")])
    assert "no binhost serves it now" in empty and "m (unreachable)" in empty
