"""A real controller with real agents: connect, heartbeats, pings, failures.

The tests of agents on a running controller share one controller for the
module (``shared``), each with drones of its own; the tests that stop or
restart the controller, or need its flags, start their own."""

from __future__ import annotations

import contextlib
import functools
import signal
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.delay import DelayedLink
from support.procs import FAST_HEARTBEAT, Agent, Controller, enroll, enroll_here, wait_for

Launch = Callable[..., Agent]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    proc = Controller(tmp_path_factory.mktemp("fleet-live"), "--ping-interval", "0.5")
    proc.start()
    yield proc
    proc.kill()


@pytest.fixture
def launch(launch: Launch) -> Launch:
    """The module's agents beat four times a second: its tests time silence
    (suspect, offline) and wait for newer heartbeats."""
    return functools.partial(launch, heartbeat_interval=FAST_HEARTBEAT)


def online(controller: Controller, name: str) -> dict[str, object] | None:
    node = controller.node(name)
    return node if node is not None and node["status"] == "online" else None


def test_agent_connects_with_hello_data_heartbeats_and_ping(shared: Controller, launch: Launch) -> None:
    controller = shared
    agent = launch(controller, "drone-io", drone_type="qemu")
    node = wait_for(lambda: online(controller, "drone-io"), what="drone-io online")
    assert node["id"] == agent.drone_id
    assert node["drone_type"] == "qemu"
    assert node["network"] == "lan"
    assert node["cores"] >= 1
    assert node["agent_version"]
    assert node["heartbeat_interval_ms"] == 250
    assert node["connected"] is True

    first = node["last_heartbeat_at"]
    beating = wait_for(
        lambda: (n := controller.node("drone-io")) and n["last_heartbeat_at"] != first and n,
        what="a newer heartbeat",
    )
    assert 0 <= beating["disk_percent"] <= 100
    assert beating["disk_free_bytes"] > 0
    assert all(beating[k] >= 0 for k in ("load1", "load5", "load15"))

    # A read can fall between the next ping and its pong, when the latest
    # ping is newer than the latest pong; wait for one where it was answered.
    pinged = wait_for(
        lambda: (
            (n := controller.node("drone-io"))
            and n["ping_latency_ms"] is not None
            and n["last_pong_at"] >= n["last_ping_at"]
            and n
        ),
        what="a ping round trip",
    )
    assert 0 < pinged["ping_latency_ms"] < 10_000  # milliseconds; seconds on a loaded machine

    types = [e["type"] for e in controller.events(drone=agent.drone_id)]
    assert types == ["drone_enrolled", "drone_connected"]


def test_a_pong_in_a_heartbeat_measures_the_round_trip_without_the_wait_for_the_heartbeat(
    shared: Controller, tmp_path: Path
) -> None:
    """Through a link that delays every byte by 150 ms each way, the round
    trip is 300 ms and a bit, whether the pong came at once (a stream's first
    ping, a ping that came while one was held, an admin's) or in the next
    heartbeat, up to a second later (1 s heartbeats, a ping every 0.5 s):
    the agent says how long it held the ping, and that is not counted."""
    delay = 0.15
    controller = shared
    port = int(controller.grpc_target.rsplit(":", 1)[1])
    with DelayedLink(port, delay) as link:
        agent = Agent(tmp_path, "drone-far", f"127.0.0.1:{link.port}", heartbeat_interval=1.0)
        enroll_here(controller, "drone-far", agent.state_dir)
        agent.start()
        try:
            drone_id = agent.drone_id
            wait_for(lambda: online(controller, "drone-far"), what="drone-far online")

            # Each pong in the protocol log, with its round trip, and whether
            # it rode on a heartbeat (then logged right after it, held_ns > 0).
            held: dict[int, bool] = {}
            pongs: dict[str, list[float]] = {"at once": [], "in a heartbeat": []}

            def answers() -> dict[str, list[float]] | None:
                status, page = controller.admin(
                    "GET", f"/admin/api/protocol?drone={drone_id}&type=pong&limit=5000"
                )
                assert status == 200, page
                for entry in page["entries"]:
                    if entry["seq"] in held or entry["latency_ms"] is None:
                        continue
                    status, body = controller.admin("GET", f"/admin/api/protocol/{entry['seq']}")
                    assert status == 200, body
                    held[entry["seq"]] = int(body["message"]["pong"].get("held_ns", 0)) > 0
                    pongs["in a heartbeat" if held[entry["seq"]] else "at once"].append(entry["latency_ms"])
                # Eight of each: a loaded machine delays a few of them (four once gave two slow).
                return pongs if all(len(values) >= 8 for values in pongs.values()) else None

            wait_for(answers, timeout=30, what="pongs at once and in heartbeats")
            status, pinged = controller.admin("POST", "/admin/api/drones/drone-far/ping")
            assert status == 200, pinged
        finally:
            agent.kill()
    median = {}
    for kind, values in pongs.items():
        values.sort()
        assert values[0] >= 2 * delay * 1000, (kind, values)  # never below the two delays
        median[kind] = values[(len(values) - 1) // 2]
    # The wait for a heartbeat (up to 1000 ms, 500 in the median) would show
    # beside the pongs sent at once; a loaded machine slows both alike.
    assert median["in a heartbeat"] < median["at once"] + 250, pongs
    assert 2 * delay * 1000 <= pinged["latency_ms"] < 2 * delay * 1000 + 1000


def test_killed_agent_is_offline_when_its_stream_ends_and_comes_back(
    shared: Controller, launch: Launch
) -> None:
    """Offline from the closed connection, not from the silence after it
    (how soon is bench/fleet.py's --cuts figure)."""
    controller = shared
    agent = launch(controller, "drone-kill")
    wait_for(lambda: online(controller, "drone-kill"), what="online")
    agent.kill()
    wait_for(lambda: controller.known_node("drone-kill")["status"] == "offline", what="offline after kill -9")
    [gone] = [e for e in controller.events(drone=agent.drone_id) if e["type"] == "drone_disconnected"]
    assert gone["data"]["new_status"] == "offline"
    assert "stream closed by the drone" in gone["message"], gone

    again = launch(controller, "drone-kill", state_dir=agent.state_dir)
    node = wait_for(lambda: online(controller, "drone-kill"), what="back online")
    assert node["id"] == again.drone_id == agent.drone_id
    nodes = controller.get("/api/v1/nodes")["nodes"]
    assert [n["id"] for n in nodes if n["name"] == "drone-kill"] == [agent.drone_id]


def test_frozen_agent_goes_suspect_then_offline_and_recovers(shared: Controller, launch: Launch) -> None:
    controller = shared
    agent = launch(controller, "drone-frozen")
    wait_for(lambda: online(controller, "drone-frozen"), what="online")
    agent.signal(signal.SIGSTOP)
    try:
        # 0.25 s heartbeats: suspect after about three intervals, offline after ten.
        # Suspect is seen in the events: a poll of the status on a loaded
        # machine can fall on either side of its second and a bit.
        wait_for(
            lambda: controller.known_node("drone-frozen")["status"] == "offline",
            what="offline while frozen",
        )
    finally:
        agent.signal(signal.SIGCONT)
    wait_for(lambda: online(controller, "drone-frozen"), what="online after SIGCONT")
    # Settled: its first pongs after the freeze may report the event-loop stall it had
    # (drone_unhealthy), and the next ones that it is over (drone_healthy).
    types = wait_for(
        lambda: (
            (t := [e["type"] for e in controller.events(drone=agent.drone_id)])
            and t[-1] in ("drone_connected", "drone_online", "drone_healthy")
            and t
        ),
        what="the drone settled after SIGCONT",
    )
    assert types[:4] == ["drone_enrolled", "drone_connected", "drone_suspect", "drone_disconnected"]
    suspect = next(e for e in controller.events(drone=agent.drone_id) if e["type"] == "drone_suspect")
    assert "no heartbeat for" in suspect["message"]


def test_suspect_drone_that_resumes_is_online_again(tmp_path: Path) -> None:
    controller = Controller(tmp_path, "--offline-after-intervals", "1000")
    controller.start()
    try:
        agent = Agent(tmp_path, "drone-pause", controller.grpc_target, heartbeat_interval=FAST_HEARTBEAT)
        assert enroll(controller, "drone-pause", agent.state_dir).returncode == 0
        agent.start()
        try:
            wait_for(lambda: online(controller, "drone-pause"), what="online")
            agent.signal(signal.SIGSTOP)
            try:
                wait_for(lambda: controller.known_node("drone-pause")["status"] == "suspect", what="suspect")
            finally:
                agent.signal(signal.SIGCONT)
            wait_for(lambda: online(controller, "drone-pause"), what="online again")
            types = [e["type"] for e in controller.events(drone=agent.drone_id)]
            assert types == ["drone_enrolled", "drone_connected", "drone_suspect", "drone_online"]
        finally:
            agent.kill()
    finally:
        controller.kill()


def persisted(db: Path) -> tuple[int, int]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        nodes = conn.execute("SELECT COUNT(*) FROM node").fetchone()[0]
        last = conn.execute("SELECT COALESCE(MAX(id), 0) FROM event").fetchone()[0]
    return int(nodes), int(last)


def test_controller_restart_agents_reconnect_and_state_survives(
    controller: Controller, agents: Callable[..., Agent]
) -> None:
    names = ["drone-a", "drone-b", "drone-c"]
    for name in names:
        agents(name)
    for name in names:
        wait_for(functools.partial(online, controller, name), what=f"{name} online")
    before = controller.events()
    assert sum(e["type"] == "drone_connected" for e in before) == 3
    # What the controller has written survives kill -9; it writes new drones
    # and events at once, so wait only for that write to land.
    db = controller.data_dir / "swarm.db"
    wait_for(lambda: persisted(db) == (3, before[-1]["id"]), what="drones and events on disk")

    controller.kill()
    controller.restart()
    # Agents back off at most 1 s (--backoff-max 1): all reconnect by themselves.
    for name in names:
        wait_for(functools.partial(online, controller, name), timeout=10, what=f"{name} back after restart")
    after = controller.events()
    ids = [e["id"] for e in after]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert {e["id"] for e in before} <= set(ids), "events from before the restart survive it"
    starts = [e for e in after if e["type"] == "controller_started"]
    assert len(starts) == 2 and starts[1]["data"]["drones_known"] == 3
    assert len(controller.get("/api/v1/nodes")["nodes"]) == 3


def test_agent_stops_cleanly_on_sigterm(shared: Controller, launch: Launch) -> None:
    controller = shared
    agent = launch(controller, "drone-term")
    wait_for(lambda: online(controller, "drone-term"), what="online")
    assert agent.terminate(timeout=5) == 0
    wait_for(lambda: controller.known_node("drone-term")["status"] == "offline", what="offline after SIGTERM")
    assert "stopped" in agent.log()


def test_controller_stops_cleanly_on_sigterm(controller: Controller, agents: Callable[..., Agent]) -> None:
    agents("drone-x")
    wait_for(lambda: online(controller, "drone-x"), what="online")
    assert controller.terminate(timeout=15) == 0
    log = controller.log()
    assert "stopped" in log
    assert "did not finish" not in log and "Traceback" not in log
