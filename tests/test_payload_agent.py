"""The drone's side of payloads, in process (the end-to-end tests with a real
controller and agent are in test_payload_deploy.py).

A real gRPC Payloads server on 127.0.0.1 serves the bytes (it can cut a
fetch short to show the resume); files, venvs, pip and the watchdog
process are real.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarm import payloadsig
from swarm.agent import configpayload, credentials, selfupdate
from swarm.agent.builder import Build, Builder
from swarm.agent.checks import HealthChecks
from swarm.agent.logs import LogSources
from swarm.agent.payloadfetch import fetch
from swarm.agent.payloads import PayloadManager
from swarm.agent.payloadstate import PayloadState
from swarm.backoff import Backoff
from swarm.payloadsig import PayloadRefused
from swarm.v1 import build_pb2, gateway_pb2, payload_pb2, payload_pb2_grpc

from support.procs import wait_for

DRONE = "d-payloads"
KEY = Ed25519PrivateKey.generate()
State = payload_pb2.PayloadStatus.State
GOOD_TOML = b'network = "tailscale"\nheartbeat_interval = 2.0\n'


class PayloadServer(payload_pb2_grpc.PayloadsServicer):
    """Serves what ``files`` holds; ``cut_after`` bytes into a fetch it drops the first one."""

    def __init__(self) -> None:
        self.files: dict[tuple[str, int], bytes] = {}
        self.cut_after: int | None = None
        self.offsets: list[int] = []
        self.gate: asyncio.Event | None = None  # set: fetches wait until it is

    async def Fetch(
        self, request: payload_pb2.PayloadRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[payload_pb2.PayloadChunk]:
        self.offsets.append(request.offset)
        if self.gate is not None:
            await self.gate.wait()
        data = self.files.get((request.kind, request.version))
        if data is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such payload")
            return
        offset = request.offset
        while offset < len(data):
            if self.cut_after is not None and offset >= self.cut_after:
                self.cut_after = None
                await context.abort(grpc.StatusCode.UNAVAILABLE, "cut off for the test")
            chunk = data[offset : offset + 1000]
            yield payload_pb2.PayloadChunk(offset=offset, data=chunk)
            offset += len(chunk)


async def serving() -> tuple[grpc.aio.Server, PayloadServer, str]:
    server = grpc.aio.server()
    servicer = PayloadServer()
    payload_pb2_grpc.add_PayloadsServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, servicer, f"127.0.0.1:{port}"


def signed(kind: str, version: int, data: bytes, *, key: Ed25519PrivateKey = KEY, **fields: Any) -> Any:
    meta = payload_pb2.PayloadMeta(
        kind=kind,
        version=version,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        expires_at_unix=int(time.time()) + 600,
        drone_id=DRONE,
        deploy_id="dep-1",
    )
    for name, value in fields.items():
        setattr(meta, name, value)
    made = payloadsig.sign(key, meta)
    return payload_pb2.ApplyPayload(meta=made.meta, signature=made.signature, confirm_within_s=30)


def portage_tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class Drone:
    """A PayloadManager as main.py wires it, with a real Builder that runs nothing."""

    def __init__(self, root: Path, target: str, emerge_ok: bool = True) -> None:
        self.state_dir = root / "state"
        self.state_dir.mkdir()
        credentials.pin_payload_key(self.state_dir, payloadsig.public_bytes(KEY))
        self.eprefix = root / "prefix"
        self.config_path = root / "agent.toml"
        self.config_path.write_bytes(b'network = "lan"\n')
        self.sent: list[payload_pb2.PayloadStatus] = []
        self.restarts: list[str] = []
        self.emerge_ok = emerge_ok
        # emerge for the emerge check: it reads the make.conf on disk, as Portage does.
        self.seen = root / "emerge-saw"
        emerge = root / "bin" / "emerge"
        emerge.parent.mkdir()
        emerge.write_text(
            "#!/bin/sh\n"
            f'conf="$PORTAGE_OVERRIDE_EPREFIX/etc/portage/make.conf"; cat "$conf" >> {self.seen}\n'
            'if grep -q BROKEN "$conf"; then echo "make.conf: No closing quotation" >&2; exit 1; fi\n'
            "echo Portage 3.0\n"
        )
        emerge.chmod(0o755)
        self.in_trial: asyncio.Event | None = None  # set: emerge_info waits for it, the trial files on disk
        self.builder = Builder(
            emerge_command=str(emerge),
            pkgdir=root / "pkgdir",
            eprefix=str(self.eprefix),
            logs=LogSources(agent_log=None, builds=root / "builds", portage=root / "plogs"),
            cache_path=root,
            min_free_bytes=0,
            send=lambda message: None,
            channel=lambda: grpc.aio.insecure_channel(target),
        )
        self.checks = HealthChecks(builder=self.builder, cache_path=root, min_free_bytes=0, stall_timeout=60)
        self.manager = PayloadManager(
            state_dir=self.state_dir,
            drone_id=DRONE,
            state=PayloadState(self.state_dir),
            builder=self.builder,
            send=self.send,
            channel=lambda: grpc.aio.insecure_channel(target),
            config_path=self.config_path,
            eprefix=str(self.eprefix),
            emerge_info=self.emerge_info,
            config_change=self.checks.config_change,
            restart=self.restarts.append,
            restart_argv=lambda: [sys.executable, "-c", "pass"],
        )

    def send(self, message: gateway_pb2.AgentMessage) -> bool:
        self.sent.append(message.payload_status)
        return True

    async def emerge_info(self) -> tuple[bool, str]:
        # The check reads the written make.conf, as emerge would.
        make_conf = (self.eprefix / "etc/portage/make.conf").read_text()
        if self.in_trial is not None:
            await self.in_trial.wait()
        return ("BROKEN" not in make_conf and self.emerge_ok), "make.conf says BROKEN"

    def states(self) -> list[tuple[str, int, str]]:
        return [(s.kind, s.version, State.Name(s.state)) for s in self.sent]

    async def until_done(self) -> payload_pb2.PayloadStatus:
        final = {State.APPLIED, State.REFUSED, State.FAILED, State.ROLLED_BACK}
        await wait_until(lambda: self.sent and self.sent[-1].state in final)
        return self.sent[-1]


async def with_drone(tmp_path: Path, scenario: Any) -> Any:
    server, servicer, target = await serving()
    drone = Drone(tmp_path, target)
    try:
        return await scenario(drone, servicer)
    finally:
        await drone.manager.stop()
        await server.stop(None)


# -- refusals: the agent verifies before it fetches ------------------------------


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: signed("portage-config", 1, b"x", key=Ed25519PrivateKey.generate()), "signature"),
        (lambda: signed("portage-config", 1, b"x", expires_at_unix=int(time.time()) - 1), "expired"),
        (lambda: signed("portage-config", 1, b"x", drone_id="someone-else"), "another drone"),
        (lambda: signed("portage-config", 1, b"x"), "older than the running 2"),
    ],
    ids=["other-key", "expired", "other-drone", "downgrade"],
)
def test_a_payload_that_does_not_verify_is_refused_saying_why(tmp_path: Path, make: Any, reason: str) -> None:
    async def scenario(drone: Drone, servicer: PayloadServer) -> payload_pb2.PayloadStatus:
        drone.manager.state.record("portage-config", 2, "0" * 64)
        drone.manager.apply(make())
        return await drone.until_done()

    status = asyncio.run(with_drone(tmp_path, scenario))
    assert State.Name(status.state) == "REFUSED" and reason in status.reason, status
    assert status.deploy_id == "dep-1"


def test_without_a_pinned_key_nothing_is_applied(tmp_path: Path) -> None:
    async def scenario(drone: Drone, servicer: PayloadServer) -> payload_pb2.PayloadStatus:
        (drone.state_dir / credentials.PAYLOAD_KEY_FILE).unlink()
        drone.manager.apply(signed("portage-config", 1, b"x"))
        return await drone.until_done()

    status = asyncio.run(with_drone(tmp_path, scenario))
    assert State.Name(status.state) == "REFUSED" and "no payload key pinned" in status.reason


def test_the_payload_key_is_pinned_once_and_never_replaced(tmp_path: Path) -> None:
    first, other = payloadsig.public_bytes(KEY), payloadsig.public_bytes(Ed25519PrivateKey.generate())
    assert not credentials.pin_payload_key(tmp_path, b"")  # a controller from before payloads
    assert credentials.load_payload_key(tmp_path) is None
    assert credentials.pin_payload_key(tmp_path, first)
    assert not credentials.pin_payload_key(tmp_path, other)
    assert credentials.load_payload_key(tmp_path) == first


def test_tampered_bytes_are_refused_after_the_fetch(tmp_path: Path) -> None:
    async def scenario(drone: Drone, servicer: PayloadServer) -> list[Any]:
        data = portage_tar({"etc/portage/make.conf": b'USE="x"\n'})
        servicer.files[("portage-config", 1)] = data[:-1] + b"!"
        drone.manager.apply(signed("portage-config", 1, data))
        await drone.until_done()
        return drone.states()

    states = asyncio.run(with_drone(tmp_path, scenario))
    assert states == [("portage-config", 1, "FETCHING"), ("portage-config", 1, "REFUSED")]
    assert not (tmp_path / "prefix/etc/portage/make.conf").exists()


# -- config payloads ------------------------------------------------------------------


def test_portage_config_waits_for_the_build_then_is_applied_and_reported(tmp_path: Path) -> None:
    async def scenario(drone: Drone, servicer: PayloadServer) -> tuple[list[Any], str, list[Any]]:
        data = portage_tar({"etc/portage/make.conf": b'USE="new"\n', "etc/portage/package.use/x": b"a/b c\n"})
        servicer.files[("portage-config", 1)] = data
        servicer.cut_after = 3000  # the fetch is cut off once and resumed
        servicer.gate = asyncio.Event()
        drone.builder.current = Build(build_pb2.StartBuild(build_id="b-1", cpv="a/b-1"))
        drone.manager.apply(signed("portage-config", 1, data))
        await wait_until(lambda: drone.sent)
        await asyncio.sleep(0.3)  # the payload stays waiting while the build runs
        assert drone.states() == [("portage-config", 1, "WAITING")]
        drone.builder.current = None  # the build ends
        await wait_until(lambda: len(drone.sent) == 2)
        # While it is applied, a build offered to the drone is refused (it goes elsewhere).
        offered: list[gateway_pb2.AgentMessage] = []
        drone.builder._send = offered.append
        drone.builder.start(build_pb2.StartBuild(build_id="b-2", cpv="a/b-2"))
        servicer.gate.set()
        await drone.until_done()
        return drone.states(), str(servicer.offsets), [m.build_event.reason for m in offered]

    states, offsets, refusals = asyncio.run(with_drone(tmp_path, scenario))
    assert refusals == ["applying payload portage-config v1"]
    assert states == [
        ("portage-config", 1, "WAITING"),
        ("portage-config", 1, "FETCHING"),
        ("portage-config", 1, "APPLIED"),
    ]
    assert offsets == "[0, 3000]"
    assert (tmp_path / "prefix/etc/portage/make.conf").read_bytes() == b'USE="new"\n'
    assert PayloadState(tmp_path / "state").running("portage-config").version == 1


def test_a_portage_config_that_breaks_emerge_info_is_restored(tmp_path: Path) -> None:
    async def scenario(drone: Drone, servicer: PayloadServer) -> payload_pb2.PayloadStatus:
        portage = drone.eprefix / "etc/portage"
        portage.mkdir(parents=True)
        (portage / "make.conf").write_bytes(b'USE="old"\n')
        data = portage_tar({"etc/portage/make.conf": b"BROKEN\n", "etc/portage/env/new.conf": b"x\n"})
        servicer.files[("portage-config", 4)] = data
        drone.manager.apply(signed("portage-config", 4, data))
        return await drone.until_done()

    status = asyncio.run(with_drone(tmp_path, scenario))
    assert State.Name(status.state) == "FAILED" and "emerge --info" in status.reason
    assert (tmp_path / "prefix/etc/portage/make.conf").read_bytes() == b'USE="old"\n'
    assert not (tmp_path / "prefix/etc/portage/env/new.conf").exists()
    assert PayloadState(tmp_path / "state").running("portage-config").version == 0


def test_the_emerge_check_never_runs_on_a_config_being_tried_and_runs_after_it(tmp_path: Path) -> None:
    """A periodic emerge check while a portage-config is tried waits for the
    change to end (a result from the trial files would stand, failing, for
    minutes: a drone unhealthy with its config restored), then reads what
    was kept."""

    async def scenario(drone: Drone, servicer: PayloadServer) -> tuple[bool, str]:
        portage = drone.eprefix / "etc/portage"
        portage.mkdir(parents=True)
        (portage / "make.conf").write_bytes(b'USE="old"\n')
        data = portage_tar({"etc/portage/make.conf": b"BROKEN\n"})
        servicer.files[("portage-config", 4)] = data
        drone.in_trial = trial = asyncio.Event()
        drone.manager.apply(signed("portage-config", 4, data))
        await wait_until(lambda: (portage / "make.conf").read_bytes() == b"BROKEN\n")
        periodic = asyncio.create_task(drone.checks.check_emerge())
        # Long enough for the stand-in emerge to run many times over, were it let.
        done, _ = await asyncio.wait({periodic}, timeout=0.5)
        trial.set()
        status = await drone.until_done()
        assert not done and State.Name(status.state) == "FAILED", status
        assert await periodic
        emerge = {c.name: c for c in drone.checks.latest()}["emerge"]
        return emerge.ok, drone.seen.read_text()

    ok, seen = asyncio.run(with_drone(tmp_path, scenario))
    assert (
        ok and "BROKEN" not in seen and seen.count('USE="old"') == 2
    )  # the periodic check and the one after


@pytest.mark.parametrize(
    ("files", "why"),
    [
        ({"etc/portage/../../etc/passwd": b"x"}, "'..'"),
        ({"/etc/portage/make.conf": b"x"}, "relative"),
        ({"etc/hosts": b"x"}, "not under etc/portage"),
        ({}, "no files"),
    ],
)
def test_a_portage_config_tar_outside_etc_portage_is_refused(files: dict[str, bytes], why: str) -> None:
    with pytest.raises(configpayload.ApplyFailed, match=why):
        configpayload.portage_files(portage_tar(files))


def test_a_portage_config_tar_with_a_link_is_refused() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("etc/portage/make.conf")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/shadow"
        tar.addfile(info)
    with pytest.raises(configpayload.ApplyFailed, match="only regular files"):
        configpayload.portage_files(out.getvalue())


def test_agent_config_is_applied_and_the_agent_restarts_or_a_bad_one_restored(tmp_path: Path) -> None:
    async def scenario(drone: Drone, servicer: PayloadServer) -> list[Any]:
        servicer.files[("agent-config", 1)] = b"heartbeat_interval = 500.0\n"  # out of range
        drone.manager.apply(signed("agent-config", 1, b"heartbeat_interval = 500.0\n"))
        await drone.until_done()
        assert drone.config_path.read_bytes() == b'network = "lan"\n'
        servicer.files[("agent-config", 2)] = GOOD_TOML
        drone.manager.apply(signed("agent-config", 2, GOOD_TOML))
        await wait_until(lambda: len(drone.sent) == 4)
        await drone.until_done()
        return drone.states()

    states = asyncio.run(with_drone(tmp_path, scenario))
    assert states[1][2] == "FAILED" and states[3] == ("agent-config", 2, "APPLIED")
    assert (tmp_path / "agent.toml").read_bytes() == GOOD_TOML


async def wait_until(predicate: Any) -> None:
    async with asyncio.timeout(30):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


def test_a_fetch_is_resumed_and_never_takes_more_than_was_signed(tmp_path: Path) -> None:
    async def scenario() -> list[int]:
        server, servicer, target = await serving()
        try:
            servicer.files[("agent", 1)] = bytes(range(256)) * 40
            servicer.cut_after = 5000
            into = tmp_path / "f"
            await fetch(
                lambda: grpc.aio.insecure_channel(target),
                "agent",
                1,
                10240,
                into,
                backoff=Backoff(0.01, 0.02),
            )
            assert into.read_bytes() == servicer.files[("agent", 1)]
            with pytest.raises(PayloadRefused, match="more bytes"):
                await fetch(lambda: grpc.aio.insecure_channel(target), "agent", 1, 9000, tmp_path / "g")
            return servicer.offsets
        finally:
            await server.stop(None)

    assert asyncio.run(scenario())[:2] == [0, 5000]


# -- the agent kind: install, launch, watchdog -----------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of this project (from the checkout) with a bumped version."""
    from support.payloads import build_wheel

    return build_wheel(tmp_path_factory.mktemp("wheel"), "0.1.0.post7")


def test_an_agent_wheel_installs_beside_the_running_one_and_current_launches_it(
    tmp_path: Path, wheel: Path
) -> None:
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    package = selfupdate.install(tmp_path, 3, digest, wheel)
    assert package == "0.1.0.post7"
    venv = selfupdate.venv_of(tmp_path, 3)
    assert selfupdate.running_version(str(venv)) == (3, digest)
    assert selfupdate.launch_argv(tmp_path, "0.1.0", ["--x"]) is None  # nothing is current yet
    selfupdate.point_current(tmp_path, "3")
    assert selfupdate.launch_argv(tmp_path, "0.1.0", ["--x"]) == [str(venv / "bin/swarm-agent"), "--x"]
    assert selfupdate.launch_argv(tmp_path, "0.2", ["--x"]) is None  # older than the floor
    # The new version runs its own code with the floor's dependencies.
    assert runs_its_own_code(venv)
    # Deployed again (a rollback to it): taken as installed, not built anew.
    assert selfupdate.install(tmp_path, 3, digest, wheel) == "0.1.0.post7"
    assert selfupdate.installed(tmp_path, 3, "0" * 64) is None
    with pytest.raises(selfupdate.InstallError, match="neither a wheel nor an sdist"):
        selfupdate.install(tmp_path, 4, digest, tmp_path / "payloads/agent/3/meta.json")


def runs_its_own_code(venv: Path) -> bool:
    """The venv's python imports this project from the venv, with the floor's grpc."""
    out = subprocess.run(
        [str(venv / "bin/python"), "-c", "import grpc, swarm, swarm.agent.link; print(swarm.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.startswith(str(venv))


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The release tarball `make dist` builds (tools/dist.py), of the checkout with a bumped version."""
    from support.payloads import build_sdist

    return build_sdist(tmp_path_factory.mktemp("sdist"), "0.1.0.post8")


def test_an_agent_sdist_is_built_and_installed_without_the_network_by_the_floors_setuptools(
    tmp_path: Path, sdist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from swarm.controller import payloadcheck

    payloadcheck.check("agent", sdist)  # the controller takes it at upload (its pyproject.toml names us)
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    assert selfupdate.install(tmp_path, 4, digest, sdist) == "0.1.0.post8"
    venv = selfupdate.venv_of(tmp_path, 4)
    assert (venv.parent / "build-swarm-0.1.0.post8.tar.gz").read_bytes() == sdist.read_bytes()
    assert runs_its_own_code(venv)
    # A floor without setuptools (the venv sees none): refused saying what is
    # missing, before pip goes looking for it; nothing is installed.
    monkeypatch.setattr(selfupdate, "dependency_paths", list)
    with pytest.raises(selfupdate.InstallError, match="needs setuptools 77 or newer"):
        selfupdate.install(tmp_path, 5, digest, sdist)
    assert selfupdate.installed(tmp_path, 5, digest) is None


def trial(state_dir: Path, pid: int, *, within: float, marker: Path) -> None:
    """A switch to version 2 from 1 under the real watchdog; the previous
    version's start command writes ``marker``."""
    (selfupdate.agent_dir(state_dir) / "1").mkdir(parents=True)
    (selfupdate.agent_dir(state_dir) / "2").mkdir(parents=True)
    selfupdate.point_current(state_dir, "1")
    selfupdate.write_trial(
        state_dir,
        selfupdate.Trial(
            version=2,
            previous="1",
            deadline=time.time() + within,
            deploy_id="dep-9",
            pid=pid,
            supervised=False,
            argv=(sys.executable, "-c", f"open({str(marker)!r}, 'w').write('restarted')"),
        ),
    )
    selfupdate.point_current(state_dir, "2")


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def watchdog(state_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swarm.agent.watchdog", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_watchdog_restores_the_previous_version_when_the_new_one_dies(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    trial(tmp_path, sleeper.pid, within=60, marker=tmp_path / "marker")
    sleeper.kill()
    sleeper.wait()
    done = watchdog(tmp_path)
    assert "exited before it connected" in done.stderr
    assert selfupdate.current_target(tmp_path) == "1"
    record = selfupdate.read_rolled_back(tmp_path)
    assert record is not None and (record.version, record.deploy_id) == (2, "dep-9")
    wait_for(lambda: (tmp_path / "marker").exists(), what="the previous version started again")


def test_the_watchdog_stops_a_new_version_that_never_connects(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    trial(tmp_path, sleeper.pid, within=0.5, marker=tmp_path / "marker")
    done = watchdog(tmp_path)
    assert "did not connect within its window" in done.stderr
    assert sleeper.wait(timeout=10) == -15  # SIGTERM
    assert selfupdate.current_target(tmp_path) == "1"
    wait_for(lambda: (tmp_path / "marker").exists(), what="the previous version started again")


def test_a_confirmed_trial_ends_the_watchdog_and_keeps_the_new_version(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    trial(tmp_path, sleeper.pid, within=60, marker=tmp_path / "marker")
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarm.agent.watchdog", str(tmp_path)], stderr=subprocess.PIPE
    )
    assert proc.stderr is not None and b"watching version 2" in proc.stderr.readline()
    assert selfupdate.claim_trial(tmp_path, "confirmed") is not None
    assert selfupdate.claim_trial(tmp_path, "failed") is None  # exactly one side wins
    _, err = proc.communicate(timeout=30)
    assert b"version 2 confirmed" in err
    assert selfupdate.current_target(tmp_path) == "2" and sleeper.poll() is None
    assert selfupdate.read_rolled_back(tmp_path) is None and not (tmp_path / "marker").exists()


def test_hello_reports_each_kind_and_the_agent_version_as_text(tmp_path: Path) -> None:
    from swarm.agent import serde

    state = PayloadState(tmp_path)
    state.record("portage-config", 5, "a" * 64)
    info = serde.HelloInfo("d", "n", 1, "unknown", "lan", "0.1.0", 1.0, "h")
    hello = serde.hello(
        info, payloads=[(r.kind, r.version, r.sha256) for r in PayloadState(tmp_path).all()]
    ).hello
    assert [(p.kind, p.version) for p in hello.payloads] == [
        ("agent", 0),
        ("agent-config", 0),
        ("portage-config", 5),
    ]
    assert hello.payload_version == "0" and "payloads" in hello.features
    assert json.loads((tmp_path / "payloads/versions.json").read_text())["portage-config"]["version"] == 5
