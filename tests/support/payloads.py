"""Payloads for tests: wheels of this project built from the checkout, and
drones that speak the control stream by hand (an enrolled identity whose
Hello lists the "payloads" feature), for the controller's side and the
console's."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc

from swarm.v1 import fleet_pb2, gateway_pb2, gateway_pb2_grpc, payload_pb2

from support.fleet import Fleet, admin
from support.inproc import InProcessController
from support.procs import Controller, agent_credentials, enroll_here

ROOT = Path(__file__).resolve().parents[2]
REASON = "signature does not verify against the pinned payload key"  # a HandDrone's refusal
APPLIED = 3  # PayloadStatus.state: applied
AGENT_CONFIG = b"heartbeat_interval = 2.0\n"  # an agent-config payload's file
REFUSED = 4  # PayloadStatus.state: refused


def build_wheel(into: Path, version: str, patches: dict[str, tuple[str, str]] | None = None) -> Path:
    """A wheel of the checkout as committed or not (its tracked files), with
    ``version`` as its package version and ``patches`` (path: (old, new))
    applied to a copy; built without the network, in a few seconds."""
    src = source_copy(into / "src", version, patches)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(into),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = into.glob("build_swarm-*.whl")
    return wheel


def build_sdist(into: Path, version: str) -> Path:
    """The release tarball of the checkout with ``version`` as its package
    version: what ``make dist`` builds (tools/dist.py's writer, its layout
    ``build-swarm-VERSION/``), of the copy build_wheel builds from."""
    import dist

    src = source_copy(into / "src", version)
    top = f"build-swarm-{version}"
    files = [p.relative_to(src) for p in src.rglob("*") if p.is_file()]
    out = into / f"{top}.tar.gz"
    dist.write_tarball(src, files, out, top, mtime=0)
    return out


def source_copy(src: Path, version: str, patches: dict[str, tuple[str, str]] | None = None) -> Path:
    """The checkout's files (tracked, or untracked and not ignored; tests,
    benchmarks and docs left out) copied to ``src``, with ``version`` as the
    package version and ``patches`` applied."""
    files = (
        subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        if not (ROOT / name).is_file() or name.startswith(("tests/", "bench/", "docs/")):
            continue
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    edits = {
        "pyproject.toml": ('version = "0.1.0"', f'version = "{version}"'),
        "common/__init__.py": ('__version__ = "0.1.0"', f'__version__ = "{version}"'),
        **(patches or {}),
    }
    for name, (old, new) in edits.items():
        text = (src / name).read_text()
        assert old in text, f"{name}: {old!r} not found"
        (src / name).write_text(text.replace(old, new, 1))
    return src


@dataclass(frozen=True)
class Drone:
    """An enrolled identity (support.procs.enroll_here) and its state dir."""

    name: str
    drone_id: str
    state_dir: Path

    @property
    def creds(self) -> grpc.ChannelCredentials:
        return cast(grpc.ChannelCredentials, agent_credentials(self.state_dir))


def enrolled(api: InProcessController, root: Path, name: str) -> Drone:
    """A drone identity enrolled with the in-process controller ``api``, its state in ``root/name``."""
    assert api.controller.ports is not None and api.controller.trust is not None
    target = type(
        "Enrollable",
        (),
        {
            "create_token": staticmethod(api.create_token),
            "enroll_target": f"127.0.0.1:{api.controller.ports.enroll}",
            "ca_pin": api.controller.trust.ca.pin,
        },
    )()
    drone_id = enroll_here(cast(Controller, target), name, root / name)
    return Drone(name, drone_id, root / name)


def staged(swarm: Fleet, kind: str, data: bytes, notes: str) -> int:
    """A payload uploaded to ``swarm``'s controller and staged: its version."""
    status, reply = swarm.controller.admin("POST", f"/admin/api/payloads?kind={kind}&notes={notes}", data)
    assert status == 201, reply
    version = int(reply["version"])
    admin(swarm, "POST", f"/admin/api/payloads/{kind}/{version}/stage")
    return version


def grpc_target(api: InProcessController) -> str:
    assert api.controller.ports is not None
    return f"localhost:{api.controller.ports.grpc}"


class Stream:
    """A drone's control stream, spoken by hand: Hello with the payloads
    feature, then what the controller sends (pings aside) to a queue."""

    def __init__(self, target: str, drone: Drone, runs: int = 0) -> None:
        """``target``: the controller's gRPC address; ``runs``: the
        portage-config version the drone says in its Hello."""
        self.target, self.drone, self.runs = target, drone, runs
        self.received: asyncio.Queue[gateway_pb2.ControllerMessage] = asyncio.Queue(maxsize=64)

    async def __aenter__(self) -> Stream:
        self._channel = grpc.aio.secure_channel(self.target, self.drone.creds)
        self.call = gateway_pb2_grpc.DroneGatewayStub(self._channel).Connect()
        hello = fleet_pb2.Hello(
            drone_id=self.drone.drone_id,
            name=self.drone.name,
            cores=2,
            heartbeat_interval_ms=60_000,
            agent_version="test",
            features=["payloads"],
            payloads=[payload_pb2.PayloadVersion(kind="portage-config", version=self.runs)],
        )
        await self.call.write(gateway_pb2.AgentMessage(hello=hello))
        self._reader = asyncio.create_task(self._read())
        welcome = await self.next()
        assert welcome.WhichOneof("body") == "welcome"
        return self

    async def _read(self) -> None:
        async for message in self.call:
            if message.WhichOneof("body") != "ping":
                await self.received.put(message)

    async def next(self, timeout: float = 10) -> gateway_pb2.ControllerMessage:
        return await asyncio.wait_for(self.received.get(), timeout)

    async def say(self, **status: Any) -> None:
        await self.call.write(gateway_pb2.AgentMessage(payload_status=payload_pb2.PayloadStatus(**status)))

    async def __aexit__(self, *exc: object) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        self.call.cancel()
        await self._channel.close()


class HandDrone:
    """A drone spoken by hand in a thread of its own (Playwright's sync API owns
    the test's thread and its event loop): it connects, says it runs
    portage-config v``runs``, and refuses each payload it is sent with REASON
    (``silent``: never answers, as a drone busy with a build; ``applies``:
    says it applied it)."""

    def __init__(
        self, target: str, drone: Drone, runs: int, *, silent: bool = False, applies: bool = False
    ) -> None:
        self.target, self.drone, self.runs = target, drone, runs
        self.silent, self.applies = silent, applies
        self.connected = threading.Event()
        self.refused: list[int] = []
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hand-drone")

    def __enter__(self) -> HandDrone:
        self._thread.start()
        assert self.connected.wait(20) or self.failure, "the hand-driven drone did not connect"
        if self.failure:
            raise self.failure
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(20)

    def _run(self) -> None:
        try:
            asyncio.run(self._speak())
        except BaseException as e:  # shown by the test, not lost in the thread
            self.failure = e
            self.connected.set()

    async def _speak(self) -> None:
        async with Stream(self.target, self.drone, self.runs) as stream:
            self.connected.set()
            while not self._stop.is_set():
                try:
                    message = await asyncio.wait_for(stream.received.get(), 0.2)
                except TimeoutError:
                    continue
                if message.WhichOneof("body") != "apply_payload" or self.silent:
                    continue
                meta = payload_pb2.PayloadMeta.FromString(message.apply_payload.meta)
                if self.applies:
                    await stream.say(
                        kind=meta.kind, version=meta.version, state=APPLIED, deploy_id=meta.deploy_id
                    )
                    continue
                await stream.say(
                    kind=meta.kind,
                    version=meta.version,
                    state=REFUSED,
                    reason=REASON,
                    deploy_id=meta.deploy_id,
                )
                self.refused.append(meta.version)
