"""Payloads, the controller's side (controller/payloads.py), in process: one
real controller (support/inproc.py) for the module, with mTLS, real HTTP
and real gRPC over 127.0.0.1. Uploads are checked per kind; a deploy
sends a signed ApplyPayload on a drone's control stream; Payloads.Fetch
serves only the drone a version is deployed to, from an offset; the
drone's PayloadStatus and Hello make its versions and drift.

The drones here are enrolled identities that speak the protocol by hand,
as an agent that lists the "payloads" feature does: what the agent does
with a payload is the agent's tests' (its real end to end is there).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import tarfile
import time
import zipfile
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import jsonschema_rs
import pytest

from swarm import payloadsig
from swarm.agent.identity import load_or_create_drone_id
from swarm.controller.domain import HelloData
from swarm.controller.errors import TooLarge
from swarm.controller.web import openapi
from swarm.pki import make_csr, new_key
from swarm.v1 import (
    enroll_pb2,
    enroll_pb2_grpc,
    payload_pb2,
    payload_pb2_grpc,
)

from fakes.links import FakeLink
from support.inproc import InProcessController, fill_executor, local_config
from support.inproc import run_cli as cli
from support.payloads import Drone, Stream, enrolled, grpc_target
from support.procs import wait_for

pytestmark = [
    pytest.mark.timeout(60),
]

MAX_BYTES = 2 * 2**20
CHUNK = 256 * 1024
PATH = "/admin/api/payloads"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessController]:
    root = tmp_path_factory.mktemp("payloads")
    config = local_config(root, ping_interval=3600.0, payload_max_bytes=MAX_BYTES, payload_confirm_within=45)
    proc = InProcessController(config).start()
    try:
        fill_executor(proc)
        yield proc
    finally:
        proc.stop()


def answers_per_schema(view: str, value: Any) -> None:
    """``value`` matches the admin document's schema of ``view`` (the
    answers tests/test_api_schema.py cannot get from its fleet: a deploy's)."""
    doc = openapi.admin_document()
    root = {"$ref": f"#/components/schemas/{view}", "components": doc["components"]}
    errors = [
        f"{e.instance_path}: {e.message}" for e in jsonschema_rs.Draft202012Validator(root).iter_errors(value)
    ]
    assert not errors, errors


def upload(api: InProcessController, kind: str, data: bytes, notes: str = "") -> tuple[int, Any]:
    query = f"?kind={kind}" + (f"&notes={notes}" if notes else "")
    return api.admin("POST", PATH + query, data)


def admin(api: InProcessController, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    return api.admin(method, path, None if body is None else json.dumps(body).encode())


def staged(api: InProcessController, kind: str, data: bytes) -> int:
    status, reply = upload(api, kind, data)
    assert status == 201, reply
    version = int(reply["version"])
    status, reply = admin(api, "POST", f"{PATH}/{kind}/{version}/stage")
    assert status == 200 and reply["state"] == "staged", reply
    return version


def wheel(name: str = "build-swarm", version: str = "0.1.1") -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        info = f"build_swarm-{version}.dist-info"
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr("swarm/__init__.py", f'__version__ = "{version}"\n')
    return out.getvalue()


def sdist(name: str = "build-swarm") -> bytes:
    return tar({"build_swarm-0.1.1/PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\n".encode()})


def tar(files: dict[str, bytes], *, gz: bool = True, extra: Sequence[tarfile.TarInfo] = ()) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz" if gz else "w") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        for info in extra:
            t.addfile(info)
    return out.getvalue()


def entry(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


# -- uploads ---------------------------------------------------------------------------------


def test_an_upload_is_the_next_version_of_its_kind_with_its_hash_and_uploader(
    api: InProcessController,
) -> None:
    data = wheel()
    status, first = upload(api, "agent", data, notes="first")
    assert status == 201, first
    status, second = upload(api, "agent", sdist(), notes="second")
    assert status == 201, second
    assert second["version"] == first["version"] + 1
    assert first["sha256"] == hashlib.sha256(data).hexdigest() and first["size"] == len(data)
    assert (
        first["uploaded_by"] == "admin:admin" and first["notes"] == "first" and first["state"] == "uploaded"
    )
    stored = api.config.data_dir / "payloads" / "agent" / str(first["version"])
    assert stored.read_bytes() == data
    status, shown = admin(api, "GET", f"{PATH}/agent/{first['version']}")
    assert status == 200 and shown == first
    status, listing = admin(api, "GET", PATH + "?kind=agent")
    assert [p["version"] for p in listing["payloads"]][:2] == [second["version"], first["version"]]
    assert len(bytes.fromhex(listing["public_key"])) == 32
    answers_per_schema("PayloadsView", listing)
    uploaded = [e for e in api.events(type="payload_uploaded") if e["data"]["version"] == first["version"]]
    assert uploaded and uploaded[0]["data"]["sha256"] == first["sha256"]


CONFIG_OK = b'controller = "ctl.example.org:8094"\nheartbeat_interval = 2.0\n'


@pytest.mark.parametrize(
    ("kind", "data", "needle"),
    [
        ("agent", b"not a package at all", "wheel (zip) or an sdist (tar)"),
        ("agent", wheel(name="requests"), "names 'requests'"),
        ("agent", sdist(name="other"), "names 'other'"),
        ("agent", tar({"README": b"hello"}), "PKG-INFO or pyproject.toml"),
        ("agent", tar({"x-1/pyproject.toml": b'[project]\nname = "other"\n'}), "names 'other'"),
        ("agent", tar({"x-1/pyproject.toml": b"[project\n"}), "not TOML"),
        ("agent-config", b"controller = [", "not an agent config"),
        ("agent-config", b"no_such_option = 1\n", "unknown option 'no_such_option'"),
        ("agent-config", b"heartbeat_interval = 0.001\n", "heartbeat_interval must be between"),
        ("agent-config", b"\x89PNG\r\n\x1a\n\x00", "not UTF-8"),
        ("agent-config", b"heartbeat_interval = {a = 1}\n", "not an agent config"),
        ("portage-config", b"plain text", "must be a tar"),
        ("portage-config", tar({"etc/portage/make.conf": bytes(range(256)) * 64})[:-300], "must be a tar"),
        ("agent", wheel()[:-40], "zip"),
        ("portage-config", tar({"etc/portage/../../root/.ssh/authorized_keys": b"x"}), "'..'"),
        ("portage-config", tar({"/etc/portage/make.conf": b"x"}), "an absolute path"),
        ("portage-config", tar({"etc/passwd": b"x"}), "not under etc/portage"),
        (
            "portage-config",
            tar({}, extra=[entry("etc/portage/make.conf", tarfile.SYMTYPE, "/etc/shadow")]),
            "links are not allowed",
        ),
        (
            "portage-config",
            tar({"etc/portage/a": b"x"}, extra=[entry("etc/portage/b", tarfile.LNKTYPE, "etc/portage/a")]),
            "links are not allowed",
        ),
        ("portage-config", tar({}, extra=[entry("etc/portage/null", tarfile.CHRTYPE)]), "only files"),
        ("portage-config", tar({}, extra=[entry("etc/portage", tarfile.DIRTYPE)]), "at least one file"),
        ("agent", b"", "empty"),
    ],
    ids=[
        "agent-garbage",
        "agent-other-wheel",
        "agent-other-sdist",
        "agent-tar-no-pkginfo",
        "agent-other-pyproject",
        "agent-pyproject-not-toml",
        "config-not-toml",
        "config-unknown-option",
        "config-bad-value",
        "config-binary",
        "config-table-for-a-number",
        "portage-not-tar",
        "portage-truncated",
        "agent-truncated-wheel",
        "portage-dotdot",
        "portage-absolute",
        "portage-outside",
        "portage-symlink",
        "portage-hardlink",
        "portage-device",
        "portage-no-file",
        "empty",
    ],
)
def test_a_payload_that_is_not_what_its_kind_must_be_is_refused_saying_why(
    api: InProcessController, kind: str, data: bytes, needle: str
) -> None:
    before = {p["version"] for p in admin(api, "GET", PATH + f"?kind={kind}")[1]["payloads"]}
    status, reply = upload(api, kind, data)
    assert status == 400, reply
    assert needle in reply["error"]["message"] and "\n" not in reply["error"]["message"]
    after = {p["version"] for p in admin(api, "GET", PATH + f"?kind={kind}")[1]["payloads"]}
    assert after == before
    assert not list((api.config.data_dir / "payloads" / ".incoming").iterdir())


def test_good_configs_are_taken_and_the_bounds_hold(api: InProcessController) -> None:
    assert upload(api, "agent-config", CONFIG_OK)[0] == 201
    good_tar = tar(
        {"etc/portage/make.conf": b'FEATURES="getbinpkg"\n', "./etc/portage/package.use/x": b"a/b c\n"}
    )
    assert upload(api, "portage-config", good_tar)[0] == 201
    status, reply = upload(api, "portage-config", b"\0" * (MAX_BYTES + 1))
    assert status == 413, reply
    assert str(MAX_BYTES) in reply["error"]["message"]
    status, reply = upload(api, "kernel", b"x")
    assert status == 400 and "kind must be one of" in reply["error"]["message"]
    status, reply = api.admin("POST", PATH, b"x")
    assert status == 400 and "kind is required" in reply["error"]["message"]
    status, reply = admin(api, "GET", f"{PATH}/agent/999999")
    assert status == 404
    status, reply = admin(api, "GET", f"{PATH}/kernel/1")
    assert status == 400
    assert not list((api.config.data_dir / "payloads" / ".incoming").iterdir())


def test_an_upload_of_unsaid_length_stops_at_the_bound_and_leaves_nothing(api: InProcessController) -> None:
    """No Content-Length (a chunked request): the bound holds as the bytes come."""
    payloads = api.controller.payloads
    assert payloads is not None
    before = payloads.latest("portage-config")
    sent = []

    async def body() -> AsyncIterator[bytes]:
        for _ in range(8):
            sent.append(CHUNK)
            yield b"\0" * CHUNK * 4

    async def push() -> None:
        await payloads.upload("portage-config", body(), notes="", by="test")

    with pytest.raises(TooLarge, match=str(MAX_BYTES)):
        api.run(push)
    assert len(sent) == MAX_BYTES // (CHUNK * 4) + 1  # read no further than past the bound
    assert payloads.latest("portage-config") == before
    assert not list((api.config.data_dir / "payloads" / ".incoming").iterdir())


def test_a_version_is_staged_once_and_deployed_only_when_staged(api: InProcessController) -> None:
    status, reply = upload(api, "agent-config", CONFIG_OK)
    version = reply["version"]
    status, reply = admin(api, "POST", f"{PATH}/agent-config/{version}/deploy", {"drones": ["nobody"]})
    assert status == 409 and "stage it first" in reply["error"]["message"]
    assert admin(api, "POST", f"{PATH}/agent-config/{version}/stage")[0] == 200
    status, reply = admin(api, "POST", f"{PATH}/agent-config/{version}/stage")
    assert status == 409 and "staged already" in reply["error"]["message"]
    status, reply = admin(api, "POST", f"{PATH}/agent-config/{version}/deploy", {"drones": ["nobody"]})
    assert status == 404
    # Two drones make a rollout (tests/test_rollouts.py): each must be known.
    status, reply = admin(api, "POST", f"{PATH}/agent-config/{version}/deploy", {"drones": ["a", "b"]})
    assert status == 404 and "'a'" in reply["error"]["message"], reply
    status, reply = admin(api, "POST", f"{PATH}/agent-config/{version}/deploy", {"drones": "a"})
    assert status == 400
    status, reply = admin(
        api, "POST", f"{PATH}/agent-config/{version}/deploy", {"drones": ["a"], "rollback": "yes"}
    )
    assert status == 400 and "rollback" in reply["error"]["message"]
    staged_events = [e for e in api.events(type="payload_staged") if e["data"]["version"] == version]
    assert len(staged_events) == 1 and staged_events[0]["data"]["by"] == "admin:admin"


def test_a_drone_whose_agent_does_not_take_payloads_is_not_sent_one(api: InProcessController) -> None:
    version = staged(api, "agent-config", CONFIG_OK)
    old = FakeLink("oldagent".ljust(32, "0"))
    hello = HelloData(old.drone_id, "oldagent", 2, "lxc", "lan", "0.0.9", 60_000, "h", "", "", "i", None)
    hello_new = HelloData(
        old.drone_id, "oldagent", 2, "lxc", "lan", "0.1", 60_000, "h", "", "", "i", None, features=("builds",)
    )
    for said in (hello, hello_new):
        api.call(api.controller.fleet.attach, said, old)
        status, reply = admin(api, "POST", f"{PATH}/agent-config/{version}/deploy", {"drones": ["oldagent"]})
        assert status == 409 and "does not apply payloads" in reply["error"]["message"]
    assert [m for m in old.sent if m.WhichOneof("body") == "apply_payload"] == []


def test_a_deploy_without_a_final_answer_times_out_and_frees_the_drone(api: InProcessController) -> None:
    version = staged(api, "agent-config", CONFIG_OK)
    link = FakeLink("silent".ljust(32, "0"))
    hello = HelloData(
        link.drone_id,
        "silent",
        2,
        "lxc",
        "lan",
        "0.1",
        60_000,
        "h",
        "",
        "",
        "i",
        None,
        features=("payloads",),
    )
    state = api.call(api.controller.fleet.attach, hello, link)
    payloads = api.controller.payloads
    assert payloads is not None
    record = payloads.get("agent-config", version)

    async def deploy() -> str:
        return await payloads.deploy_one(
            state, record, deploy_id="d-test", rollback=False, by="test", timeout=0.3
        )

    assert api.run(deploy) == "timed_out"
    [sent] = [m for m in link.sent if m.WhichOneof("body") == "apply_payload"]
    assert sent.apply_payload.confirm_within_s == 45
    meta = payloadsig.verify(
        payloads.public_key,
        payloadsig.Signed(sent.apply_payload.meta, sent.apply_payload.signature),
        now=time.time(),
        drone_id=link.drone_id,
        running=0,
    )
    assert (meta.kind, meta.version, meta.sha256, meta.size) == (
        "agent-config",
        version,
        record.sha256,
        record.size,
    )
    assert meta.deploy_id == "d-test" and not meta.rollback
    assert time.time() + 3000 < meta.expires_at_unix <= time.time() + 3600
    mine = [
        v for v in admin(api, "GET", "/admin/api/drones/versions")[1]["versions"] if v["drone"] == "silent"
    ]
    assert mine == [
        {
            "drone": "silent",
            "drone_id": link.drone_id,
            "kind": "agent-config",
            "expected": version,
            "running": 0,
            "drift": True,
            "state": "timed_out",
            "reason": "no final answer from the drone within 0.3s",
            "deploy_id": "d-test",
            "updated_at": mine[0]["updated_at"],
        }
    ]
    # Over: a new deploy to it is taken.
    status, reply = admin(api, "POST", f"{PATH}/agent-config/{version}/deploy", {"drones": ["silent"]})
    assert status == 202, reply


# -- the wire: a deploy, Fetch and the drone's answers -----------------------------------------------


async def fetch(
    api: InProcessController, drone: Drone, kind: str, version: int, offset: int = 0
) -> AsyncIterator[payload_pb2.PayloadChunk]:
    async with grpc.aio.secure_channel(grpc_target(api), drone.creds) as channel:
        stub = payload_pb2_grpc.PayloadsStub(channel)
        async for chunk in stub.Fetch(payload_pb2.PayloadRequest(kind=kind, version=version, offset=offset)):
            yield chunk


async def fetch_error(
    api: InProcessController, drone: Drone, kind: str, version: int, offset: int = 0
) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async for _ in fetch(api, drone, kind, version, offset):
            pass
    return f"{refused.value.code().name}: {refused.value.details()}"


@pytest.fixture(scope="module")
def drones(api: InProcessController, tmp_path_factory: pytest.TempPathFactory) -> tuple[Drone, Drone]:
    root = tmp_path_factory.mktemp("drones")
    return enrolled(api, root, "taker"), enrolled(api, root, "other")


def drone_version(api: InProcessController, name: str, kind: str) -> dict[str, Any] | None:
    found = [v for v in admin(api, "GET", "/admin/api/drones/versions")[1]["versions"] if v["drone"] == name]
    return next((v for v in found if v["kind"] == kind), None)


def test_a_deployed_payload_is_fetched_by_its_drone_only_resumed_from_an_offset_and_applied(
    api: InProcessController, drones: tuple[Drone, Drone]
) -> None:
    taker, other = drones
    # Several chunks, not a multiple of one.
    data = tar({f"etc/portage/package.use/f{i}": bytes([i]) * 70_000 for i in range(10)}, gz=False)
    version = staged(api, "portage-config", data)
    public_key = bytes.fromhex(admin(api, "GET", PATH)[1]["public_key"])

    async def scenario() -> None:
        async with Stream(grpc_target(api), taker) as stream:
            status, reply = await asyncio.to_thread(
                admin, api, "POST", f"{PATH}/portage-config/{version}/deploy", {"drones": [taker.name]}
            )
            assert status == 202, reply
            deploy_id = reply["deploy_id"]
            assert reply["drones"] == [taker.name]
            answers_per_schema("DeployView", reply)
            status, reply = await asyncio.to_thread(
                admin, api, "POST", f"{PATH}/portage-config/{version}/deploy", {"drones": [taker.name]}
            )
            assert status == 409 and deploy_id in reply["error"]["message"]
            apply = (await stream.next()).apply_payload
            meta = payloadsig.verify(
                public_key,
                payloadsig.Signed(apply.meta, apply.signature),
                now=time.time(),
                drone_id=taker.drone_id,
                running=0,
            )
            assert meta.deploy_id == deploy_id and meta.size == len(data)
            await stream.say(kind="portage-config", version=version, state=2, deploy_id=deploy_id)
            await asyncio.to_thread(
                wait_for,
                lambda: (drone_version(api, taker.name, "portage-config") or {}).get("state") == "fetching",
                what="the drone fetching",
            )

            # Another drone may not fetch it; nobody may fetch what does not exist.
            assert (await fetch_error(api, other, "portage-config", version)).startswith("PERMISSION_DENIED")
            assert (await fetch_error(api, taker, "portage-config", 10**6)).startswith("NOT_FOUND")
            assert (await fetch_error(api, taker, "kernel", version)).startswith("NOT_FOUND")
            past = await fetch_error(api, taker, "portage-config", version, len(data) + 1)
            assert past.startswith("OUT_OF_RANGE")

            # A fetch cut after its first chunk, resumed from there.
            got = bytearray()
            async for chunk in fetch(api, taker, "portage-config", version):
                assert chunk.offset == 0 and len(chunk.data) == CHUNK
                got += chunk.data
                break
            offsets = []
            async for chunk in fetch(api, taker, "portage-config", version, len(got)):
                assert chunk.offset == len(got) and len(chunk.data) <= CHUNK
                offsets.append(chunk.offset)
                got += chunk.data
            assert len(offsets) == -(-(len(data) - CHUNK) // CHUNK)
            assert hashlib.sha256(got).hexdigest() == meta.sha256
            assert [c async for c in fetch(api, taker, "portage-config", version, len(data))] == []

            fetching = await asyncio.to_thread(drone_version, api, taker.name, "portage-config")
            assert fetching is not None
            assert (fetching["expected"], fetching["running"], fetching["drift"]) == (version, 0, True)
            assert fetching["state"] == "fetching" and fetching["deploy_id"] == deploy_id
            await stream.say(kind="portage-config", version=version, state=3, deploy_id=deploy_id)
            applied = await asyncio.to_thread(
                wait_for,
                lambda: (
                    (v := drone_version(api, taker.name, "portage-config")) and v["state"] == "applied" and v
                ),
                what="the drone's payload applied",
            )
            assert (applied["expected"], applied["running"], applied["drift"]) == (version, version, False)
            answers_per_schema("DroneVersionsView", admin(api, "GET", "/admin/api/drones/versions")[1])
            # Said again (as after a reconnect): once is enough.
            await stream.say(kind="portage-config", version=version, state=3, deploy_id=deploy_id)

    asyncio.run(scenario())
    events = [e for e in api.events(type="payload_applied") if e["drone_id"] == taker.drone_id]
    assert len(events) == 1 and events[0]["data"]["version"] == version
    started = [e for e in api.events(type="payload_deploy_started") if e["drone_id"] == taker.drone_id]
    assert started[-1]["data"]["deploy_id"] == events[0]["data"]["deploy_id"]


def test_a_refusal_is_kept_with_the_drones_reason_and_shows_as_drift(
    api: InProcessController, drones: tuple[Drone, Drone]
) -> None:
    taker, _ = drones
    data = tar({"etc/portage/make.conf": b'USE="-X"\n'})
    version = staged(api, "portage-config", data)
    running = version - 1  # what it says in its Hello

    async def scenario() -> None:
        async with Stream(grpc_target(api), taker, running) as stream:
            status, reply = await asyncio.to_thread(
                admin, api, "POST", f"{PATH}/portage-config/{version}/deploy", {"drones": [taker.drone_id]}
            )
            assert status == 202, reply
            apply = (await stream.next()).apply_payload
            meta = payload_pb2.PayloadMeta.FromString(apply.meta)
            await stream.say(
                kind="portage-config",
                version=version,
                state=4,
                reason="signature does not verify against the pinned payload key",
                deploy_id=meta.deploy_id,
            )
            await asyncio.to_thread(
                wait_for,
                lambda: (drone_version(api, taker.name, "portage-config") or {}).get("state") == "refused",
                what="the refusal",
            )

    asyncio.run(scenario())
    shown = drone_version(api, taker.name, "portage-config")
    assert shown is not None
    assert shown["expected"] == version and shown["running"] == running and shown["drift"] is True
    assert shown["reason"] == "signature does not verify against the pinned payload key"
    [refused] = [e for e in api.events(type="payload_refused") if e["data"]["version"] == version]
    assert "signature does not verify" in refused["message"] and refused["drone_id"] == taker.drone_id
    assert admin(api, "GET", "/admin/api/drones/versions")[1]["drifting"] >= 1


def test_the_payload_key_comes_with_the_certificate_and_its_renewal(
    api: InProcessController, drones: tuple[Drone, Drone], tmp_path: Path
) -> None:
    public_key = bytes.fromhex(admin(api, "GET", PATH)[1]["public_key"])
    taker, _ = drones
    ports, trust = api.controller.ports, api.controller.trust
    assert ports is not None and trust is not None
    pem = trust.ca.pem

    async def scenario() -> tuple[bytes, bytes]:
        key = new_key()
        async with grpc.aio.secure_channel(grpc_target(api), taker.creds) as channel:
            renewed = await enroll_pb2_grpc.EnrollmentStub(channel).Renew(
                enroll_pb2.RenewRequest(csr_pem=make_csr(key, taker.drone_id))
            )
        drone_id = load_or_create_drone_id(tmp_path)
        request = enroll_pb2.EnrollRequest(
            token=api.create_token(), csr_pem=make_csr(key, drone_id), drone_id=drone_id, name="newcomer"
        )
        async with grpc.aio.secure_channel(
            f"localhost:{ports.enroll}", grpc.ssl_channel_credentials(root_certificates=pem)
        ) as channel:
            enrolled_reply = await enroll_pb2_grpc.EnrollmentStub(channel).Enroll(request)
        return renewed.payload_public_key, enrolled_reply.payload_public_key

    assert asyncio.run(scenario()) == (public_key, public_key)
    key_file = api.config.data_dir / "pki" / "payload.key"
    assert key_file.stat().st_mode & 0o777 == 0o600


# -- swarm-cli payload ---------------------------------------------------------------------------


def test_cli_pushes_lists_stages_deploys_and_waits_and_shows_drift(
    api: InProcessController, drones: tuple[Drone, Drone], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    taker, _ = drones
    file = tmp_path / "portage.tar.gz"
    file.write_bytes(tar({"etc/portage/make.conf": b'MAKEOPTS="-j2"\n'}))
    code, out, err = cli(
        api, capsys, "payload", "push", "portage-config", str(file), "--notes", "cli", "--stage"
    )
    assert code == 0, err
    version = int(out.split()[2])
    assert out.startswith(f"portage-config version {version} staged:")
    code, out, _ = cli(api, capsys, "payload", "list", "--kind", "portage-config")
    assert code == 0 and any(
        line.split()[:3] == ["portage-config", str(version), "staged"] for line in out.splitlines()
    )

    (tmp_path / "junk").write_bytes(b"junk")
    code, _, err = cli(api, capsys, "payload", "push", "agent", str(tmp_path / "junk"))
    assert code == 1 and err.count("\n") == 1 and "400" in err and "wheel (zip) or an sdist" in err
    code, _, err = cli(api, capsys, "payload", "push", "agent", str(tmp_path / "missing"))
    assert code == 2 and "cannot read" in err
    code, _, err = cli(api, capsys, "payload", "stage", "portage-config", "0")
    assert code == 2 and "not a version" in err

    async def scenario() -> tuple[int, str, str]:
        async with Stream(grpc_target(api), taker, version - 1) as stream:
            waiting = asyncio.create_task(
                asyncio.to_thread(
                    cli,
                    api,
                    capsys,
                    "payload",
                    "deploy",
                    "portage-config",
                    str(version),
                    "--drone",
                    taker.name,
                    "--wait",
                )
            )
            apply = (await stream.next()).apply_payload
            meta = payload_pb2.PayloadMeta.FromString(apply.meta)
            await stream.say(kind="portage-config", version=version, state=1, deploy_id=meta.deploy_id)
            await stream.say(kind="portage-config", version=version, state=3, deploy_id=meta.deploy_id)
            return await waiting

    code, out, err = asyncio.run(scenario())
    assert code == 0, err
    assert f"portage-config version {version} sent to {taker.name}" in out and f"{taker.name}: applied" in out
    code, out, _ = cli(api, capsys, "payload", "status", "--drone", taker.name)
    [row] = [
        line.split() for line in out.splitlines() if line.startswith(taker.name) and "portage-config" in line
    ]
    assert row[:6] == [taker.name, "portage-config", str(version), str(version), "no", "applied"]
    code, out, _ = cli(api, capsys, "--json", "payload", "status", "--drone", taker.name)
    assert code == 0 and json.loads(out)["versions"][0]["drone"] == taker.name
