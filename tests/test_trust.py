"""Trust between agents and controller: enrollment, mutual TLS, authorization, revocation, renewal.

The tests of one controller share a real controller process for the module
(each uses drone names and tokens of its own); renewal and --insecure
start controllers of their own, with their flags. The deciding parts
(token expiry, the cap) are tested in process."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import importlib
import json
import pkgutil
import secrets
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509

from swarm.controller import authz
from swarm.pki import load_cert, spki_pin
from swarm.v1 import (
    build_pb2,
    build_pb2_grpc,
    enroll_pb2,
    enroll_pb2_grpc,
    gateway_pb2_grpc,
    payload_pb2,
    payload_pb2_grpc,
    shell_pb2_grpc,
)

from fakes.clock import ManualClock
from support.procs import Agent, Controller, agent_credentials, enroll, http, wait_for


def online(controller: Controller, name: str) -> bool:
    node = controller.node(name)
    return node is not None and node["status"] == "online"


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    """One controller for the module (overrides conftest's, one a test)."""
    proc = Controller(tmp_path_factory.mktemp("trust"), "--ping-interval", "0.5")
    proc.start()
    yield proc
    proc.kill()


def drone_credentials(pki: Path) -> tuple[bytes, bytes]:
    """(key, certificate) of a new drone, signed by the controller CA kept in ``pki``."""
    from swarm.controller.ca import CertificateAuthority
    from swarm.pki import key_pem, make_csr, new_key

    key, drone_id = new_key(), secrets.token_hex(16)
    issued = CertificateAuthority.load_or_create(pki).sign_drone(
        make_csr(key, drone_id), drone_id, datetime.timedelta(hours=1)
    )
    return key_pem(key), issued.pem


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """(key, certificate) of a drone of another controller: its CA, made as every controller makes one."""
    return drone_credentials(tmp_path_factory.mktemp("other") / "pki")


def test_enrollment_end_to_end(controller: Controller, tmp_path: Path) -> None:
    state = tmp_path / "fresh"
    result = enroll(controller, "fresh", state)
    assert result.returncode == 0, result.stderr
    assert "enrolled fresh" in result.stdout
    drone_id = (state / "drone-id").read_text().strip()
    cert = load_cert((state / "drone.crt").read_bytes())
    ca = load_cert((state / "ca.crt").read_bytes())
    assert spki_pin(ca) == controller.ca_pin
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == drone_id
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 29 <= lifetime.days <= 31  # default 30 days
    assert oct((state / "drone.key").stat().st_mode & 0o777) == "0o600"
    enrolled = [e for e in controller.events(type="drone_enrolled") if e["drone_id"] == drone_id]
    assert [e["drone_name"] for e in enrolled] == ["fresh"]


def test_spent_token_wrong_pin_and_bound_name_are_refused(controller: Controller, tmp_path: Path) -> None:
    token = controller.create_token()
    assert enroll(controller, "first", tmp_path / "first", token=token).returncode == 0
    again = enroll(controller, "second", tmp_path / "second", token=token)
    assert again.returncode == 1
    assert again.stderr.strip() == (
        "swarm-agent: enrollment refused: the join token is unknown, spent, revoked or expired"
    )

    wrong_pin = "sha256:" + "0" * 64
    pinned = enroll(controller, "third", tmp_path / "third", pin=wrong_pin)
    assert pinned.returncode == 1
    assert "presented no CA matching" in pinned.stderr
    assert not (tmp_path / "third" / "drone.key").exists()

    bad_pin = enroll(controller, "third", tmp_path / "third", pin="md5:1234")
    assert bad_pin.returncode == 1 and "sha256:<64 hex digits>" in bad_pin.stderr

    bound = controller.create_token(name="only-me")
    other = enroll(controller, "someone", tmp_path / "someone", token=bound)
    assert other.returncode == 1 and "this join token is for drone 'only-me'" in other.stderr
    assert enroll(controller, "only-me", tmp_path / "only-me", token=bound).returncode == 0

    forged = enroll(controller, "forger", tmp_path / "forger", token=token.split(".")[0] + ".not-the-secret")
    assert forged.returncode == 1 and "unknown, spent" in forged.stderr

    # An enrolled drone's id with no valid token: the token is refused, and
    # nothing says that the id is enrolled.
    probing = enroll(controller, "first", tmp_path / "first", token=token)
    assert probing.returncode == 1 and "unknown, spent" in probing.stderr
    again = enroll(controller, "first", tmp_path / "first")
    assert again.returncode == 1 and "already enrolled" in again.stderr


def test_revoked_token_is_refused_and_listed(controller: Controller, tmp_path: Path) -> None:
    token = controller.create_token()
    token_id = token.split(".")[0]
    status, _ = controller.admin("DELETE", f"/admin/api/tokens/{token_id}")
    assert status == 200
    assert enroll(controller, "late", tmp_path / "late", token=token).returncode == 1
    status, body = controller.admin("GET", "/admin/api/tokens")
    states = {t["id"]: t["state"] for t in body["tokens"]}
    assert states[token_id] == "revoked"
    assert token.split(".")[1] not in json.dumps(body), "listing never shows a secret"
    assert controller.admin("DELETE", f"/admin/api/tokens/{token_id}")[0] == 404


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"ttl": 10}, "ttl must be between"),
        ({"ttl": 90000}, "ttl must be between"),
        ({"ttl": "1h"}, "ttl must be a number"),
        ({"name": "no spaces"}, "name 'no spaces'"),
    ],
)
def test_token_requests_are_validated(controller: Controller, body: dict[str, object], needle: str) -> None:
    status, reply = controller.admin("POST", "/admin/api/tokens", json.dumps(body).encode())
    assert status == 400 and needle in reply["error"]["message"]
    status, reply = controller.admin("POST", "/admin/api/tokens", b"{not json")
    assert status == 400 and "not valid JSON" in reply["error"]["message"]
    assert http("POST", controller.admin_url + "/admin/api/tokens", body=b"{}")[0] == 401


@contextlib.asynccontextmanager
async def trust_in_process(tmp_path: Path, **options: Any) -> AsyncIterator[Any]:
    """A Trust on a SQLite store of its own, no controller around it."""
    from swarm.controller.ca import CertificateAuthority
    from swarm.controller.events import EventLog
    from swarm.controller.fleet import Fleet
    from swarm.controller.store.runner import StoreRunner
    from swarm.controller.store.sql import SqlStore
    from swarm.controller.trust import Trust

    runner = StoreRunner(SqlStore(f"sqlite:///{tmp_path}/trust.db"))
    await runner.open()
    events = EventLog(runner, buffer=100, retention=1000)
    try:
        yield Trust(
            CertificateAuthority.load_or_create(tmp_path / "pki"),
            runner,
            events,
            Fleet(events, y_threshold=5.0),
            cert_lifetime=3600,
            **options,
        )
    finally:
        await runner.close()


def test_expired_token_is_refused(tmp_path: Path) -> None:
    """Expiry checked in process, with the clock moved forward instead of waiting."""
    from swarm.controller.errors import Unauthenticated
    from swarm.pki import make_csr, new_key

    clock = ManualClock()

    async def scenario() -> None:
        async with trust_in_process(tmp_path, clock=clock) as trust:
            new = await trust.create_token(60, None, "test")
            await clock.advance(61)
            with pytest.raises(Unauthenticated, match="expired"):
                await trust.enroll(new.token, make_csr(new_key(), "a" * 32), "a" * 32, "late")

    asyncio.run(scenario())


def test_live_join_tokens_are_capped_and_expired_ones_do_not_count(tmp_path: Path) -> None:
    """The cap, in process, with the clock moved past the tokens' expiry
    (tests/test_admin_auth.py checks the 409 and revocation on a live controller)."""
    from swarm.controller.errors import FailedPrecondition

    clock = ManualClock()

    async def scenario() -> None:
        async with trust_in_process(tmp_path, max_tokens=2, clock=clock) as trust:
            # Two at once cannot both take the last place.
            made = await asyncio.gather(
                *(trust.create_token(60, None, "test") for _ in range(3)), return_exceptions=True
            )
            refused = [x for x in made if isinstance(x, FailedPrecondition)]
            assert len(refused) == 1 and "2 join tokens are live" in refused[0].message
            await clock.advance(61)
            await trust.create_token(600, None, "test")
            await trust.create_token(600, None, "test")
            with pytest.raises(FailedPrecondition, match="--join-tokens-max 2"):
                await trust.create_token(600, None, "test")

    asyncio.run(scenario())


def all_methods() -> list[str]:
    """Every RPC of every service in swarm.v1 (each .proto's module found, not listed)."""
    import swarm.v1

    methods = []
    for found in pkgutil.iter_modules(swarm.v1.__path__):
        if not found.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"swarm.v1.{found.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            methods += [f"/{service.full_name}/{m.name}" for m in service.methods]
    return sorted(methods)


def test_every_rpc_has_an_authorization_rule() -> None:
    assert all_methods() == sorted(authz.RULES), "a new RPC needs a rule in swarm.controller.authz.RULES"


async def call_method(target: str, creds: grpc.ChannelCredentials, method: str) -> grpc.StatusCode:
    """Call a method with harmless input; the status says whether it was let through."""
    async with grpc.aio.secure_channel(target, creds) as channel:
        await asyncio.wait_for(channel.channel_ready(), 5)
        try:
            # The streams: nothing written. The refusal comes at the call's start, and a write
            # that met it on its way made the call end INTERNAL (RST_STREAM) now and then, not
            # with it (seen on Shell, then on Connect under a loaded make test).
            if method == "/swarm.v1.DroneGateway/Connect":
                stream: Any = gateway_pb2_grpc.DroneGatewayStub(channel).Connect()
            elif method == "/swarm.v1.Channels/Shell":
                stream = shell_pb2_grpc.ChannelsStub(channel).Shell()
            else:
                stream = None
            if stream is not None:
                assert await asyncio.wait_for(stream.read(), 5) is grpc.aio.EOF
                return await stream.code()
            if method == "/swarm.v1.Payloads/Fetch":
                fetch = payload_pb2_grpc.PayloadsStub(channel).Fetch(
                    payload_pb2.PayloadRequest(kind="agent", version=1), timeout=5
                )
                async for _ in fetch:
                    pass
                return grpc.StatusCode.OK
            builds = build_pb2_grpc.BuildsStub(channel)
            if method == "/swarm.v1.Builds/BuildLog":
                await builds.BuildLog(
                    iter([build_pb2.LogChunk(build_id="b-000000000000", data=b"x")]), timeout=5
                )
                return grpc.StatusCode.OK
            if method == "/swarm.v1.Builds/QueryUpload":
                await builds.QueryUpload(build_pb2.UploadQuery(build_id="b-000000000000"), timeout=5)
                return grpc.StatusCode.OK
            if method == "/swarm.v1.Builds/Upload":
                await builds.Upload(iter([build_pb2.ArtifactChunk(query=build_pb2.UploadQuery())]), timeout=5)
                return grpc.StatusCode.OK
            stub = enroll_pb2_grpc.EnrollmentStub(channel)
            if method == "/swarm.v1.Enrollment/Enroll":
                await stub.Enroll(
                    enroll_pb2.EnrollRequest(token="x.y", drone_id="a" * 32, name="x"), timeout=5
                )
            else:
                await stub.Renew(enroll_pb2.RenewRequest(csr_pem=b"junk"), timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK


def first_frame(controller: Controller, tmp_path: Path, client: tuple[bytes, bytes] | None) -> bytes:
    """What the gateway port sends a TLS client (with ``client``'s key and
    certificate) after HTTP/2's preface: its SETTINGS if the handshake took
    the client's certificate; nothing, the connection closed, if it did not."""
    context = ssl.create_default_context(cadata=(controller.data_dir / "pki" / "ca.crt").read_text())
    context.check_hostname = False
    context.set_alpn_protocols(["h2"])
    if client is not None:
        (tmp_path / "client.key").write_bytes(client[0])
        (tmp_path / "client.crt").write_bytes(client[1])
        context.load_cert_chain(tmp_path / "client.crt", tmp_path / "client.key")
    with socket.create_connection(("127.0.0.1", controller.info["grpc_port"]), timeout=10) as raw:
        frame = b""
        try:
            with context.wrap_socket(raw) as tls:
                tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                while len(frame) < 9 and (chunk := tls.recv(9 - len(frame))):
                    frame += chunk
        except OSError:  # the refusal as a TLS alert or a reset, not as the end of the stream
            return b""
        return frame


def test_the_gateway_port_takes_only_certificates_of_its_own_ca(
    controller: Controller, foreign: tuple[bytes, bytes], tmp_path: Path
) -> None:
    own = drone_credentials(controller.data_dir / "pki")
    taken = first_frame(controller, tmp_path, own)
    assert len(taken) == 9 and taken[3] == 0x04, taken  # an HTTP/2 SETTINGS frame's header
    assert first_frame(controller, tmp_path, None) == b""
    assert first_frame(controller, tmp_path, foreign) == b""


@pytest.mark.parametrize("method", all_methods())
def test_every_rpc_refuses_callers_it_does_not_know(controller: Controller, method: str) -> None:
    ca_pem = (controller.data_dir / "pki" / "ca.crt").read_bytes()
    no_cert = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    # On the enrollment port nobody has a certificate: only Enroll is allowed,
    # and it still needs a valid token.
    status = asyncio.run(call_method(controller.enroll_target, no_cert, method))
    if method == "/swarm.v1.Enrollment/Enroll":
        assert status == grpc.StatusCode.UNAUTHENTICATED
    else:
        assert status == grpc.StatusCode.PERMISSION_DENIED


def test_a_drone_cannot_renew_for_another(controller: Controller, tmp_path: Path) -> None:
    from swarm.pki import drone_id_of, make_csr, new_key

    assert enroll(controller, "b", tmp_path / "b").returncode == 0
    assert enroll(controller, "a", tmp_path / "a").returncode == 0
    a_id = (tmp_path / "a" / "drone-id").read_text().strip()
    b_id = (tmp_path / "b" / "drone-id").read_text().strip()

    async def renew_as_b_for_a() -> bytes:
        async with grpc.aio.secure_channel(
            controller.grpc_target, agent_credentials(tmp_path / "b")
        ) as channel:
            reply = await enroll_pb2_grpc.EnrollmentStub(channel).Renew(
                enroll_pb2.RenewRequest(csr_pem=make_csr(new_key(), a_id)), timeout=10
            )
            return bytes(reply.certificate_pem)

    cert = load_cert(asyncio.run(renew_as_b_for_a()))
    assert drone_id_of(cert) == b_id  # the CSR's claim is ignored: the caller's certificate decides


def test_revocation_ends_a_live_stream(controller: Controller, agents: Callable[..., Agent]) -> None:
    agent = agents("doomed")
    wait_for(lambda: online(controller, "doomed"), what="online")
    status, body = controller.admin("POST", "/admin/api/drones/doomed/revoke")
    assert status == 200 and body["certificates"] == 1
    wait_for(lambda: controller.known_node("doomed")["status"] == "offline", what="offline")
    # Cut by the revocation itself, not found silent later.
    [cut] = [e for e in controller.events(drone=agent.drone_id) if e["type"] == "drone_disconnected"]
    assert "certificate was revoked" in cut["message"], cut
    # It cannot come back with its revoked certificate.
    wait_for(lambda: "revoked or unknown" in agent.log(), what="the agent refused on reconnect")
    assert controller.known_node("doomed")["status"] == "offline"
    events = [e["type"] for e in controller.events(drone=agent.drone_id)]
    assert "drone_revoked" in events
    assert controller.admin("POST", "/admin/api/drones/ghost/revoke")[0] == 404


def test_certificate_is_renewed_before_expiry_without_going_offline(tmp_path: Path) -> None:
    controller = Controller(tmp_path, "--cert-lifetime", "6")
    controller.start()
    try:
        agent = Agent(tmp_path, "renewer", controller.grpc_target)
        assert enroll(controller, "renewer", agent.state_dir).returncode == 0
        first = load_cert((agent.state_dir / "drone.crt").read_bytes()).serial_number
        agent.start()
        try:
            wait_for(lambda: online(controller, "renewer"), what="online")
            # Renewal at two thirds of 6 s; then the stream moves to the new certificate.
            wait_for(lambda: controller.events(type="certificate_renewed"), timeout=10, what="a renewal")
            wait_for(lambda: "switched the control stream" in agent.log(), what="the switch")
            second = load_cert((agent.state_dir / "drone.crt").read_bytes()).serial_number
            assert second != first
            # Past the first certificate's expiry the drone is still online on the second.
            wait_for(
                lambda: (
                    controller.events(type="certificate_renewed")
                    and len(controller.events(type="certificate_renewed")) >= 2
                ),
                timeout=10,
                what="a second renewal",
            )
            types = [e["type"] for e in controller.events(drone=agent.drone_id)]
            assert "drone_disconnected" not in types, types
            assert online(controller, "renewer")
        finally:
            agent.kill()
    finally:
        controller.kill()


def test_insecure_mode_is_explicit_and_warned(tmp_path: Path) -> None:
    controller = Controller(tmp_path, "--insecure")
    controller.start()
    try:
        assert "--insecure" in controller.log() and "WARNING" in controller.log()
        assert controller.info["enroll_port"] is None and controller.info["ca_pin"] is None
        agent = Agent(tmp_path, "plain", controller.grpc_target, "--insecure")
        agent.start()
        try:
            wait_for(lambda: online(controller, "plain"), what="online in plaintext")
            assert "--insecure" in agent.log()
        finally:
            agent.kill()
        status, body = controller.admin("POST", "/admin/api/tokens", b"{}")
        assert status == 409 and "--insecure" in body["error"]["message"]
    finally:
        controller.kill()


def test_agent_without_certificate_says_how_to_enroll(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "swarm.agent.main", "--state-dir", str(tmp_path), "--log-file", ""],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "not enrolled" in result.stderr and "swarm-agent enroll" in result.stderr


def _csr(key: Any, drone_id: str) -> bytes:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, drone_id)])
    digest = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, digest)
    return csr.public_bytes(serialization.Encoding.PEM)


def test_enrollment_refuses_keys_the_gateway_cannot_serve_before_spending_the_token(
    controller: Controller,
) -> None:
    """An Ed25519 (or P-521, or small RSA) certificate would be issued and then
    fail every handshake; such a request, and one that does not parse, is
    refused with what works, and the token stays good. The keys said to work
    really connect: each renews its own certificate over the gateway."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    ca_pem = (controller.data_dir / "pki" / "ca.crt").read_bytes()
    no_cert = grpc.ssl_channel_credentials(root_certificates=ca_pem)

    async def enroll_with(token: str, key: Any, name: str) -> tuple[grpc.StatusCode, str, bytes]:
        drone_id = secrets.token_hex(16)
        csr = b"-----BEGIN CERTIFICATE REQUEST-----\njunk\n" if key is None else _csr(key, drone_id)
        async with grpc.aio.secure_channel(controller.enroll_target, no_cert) as channel:
            try:
                reply = await enroll_pb2_grpc.EnrollmentStub(channel).Enroll(
                    enroll_pb2.EnrollRequest(token=token, csr_pem=csr, drone_id=drone_id, name=name),
                    timeout=10,
                )
            except grpc.aio.AioRpcError as exc:
                return exc.code(), exc.details() or "", b""
        return grpc.StatusCode.OK, "", bytes(reply.certificate_pem)

    async def renew_with(key: Any, cert_pem: bytes) -> bytes:
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        creds = grpc.ssl_channel_credentials(ca_pem, key_pem, cert_pem)
        async with grpc.aio.secure_channel(controller.grpc_target, creds) as channel:
            reply = await enroll_pb2_grpc.EnrollmentStub(channel).Renew(
                enroll_pb2.RenewRequest(csr_pem=_csr(key, "ignored")), timeout=10
            )
        return bytes(reply.certificate_pem)

    enrolled_before = len(controller.events(type="drone_enrolled"))
    token = controller.create_token()
    refused = {
        "garbage": None,
        "Ed25519": ed25519.Ed25519PrivateKey.generate(),
        "P-521": ec.generate_private_key(ec.SECP521R1()),
        "RSA 1024": rsa.generate_private_key(public_exponent=65537, key_size=1024),
    }
    for what, key in refused.items():
        code, details, _ = asyncio.run(enroll_with(token, key, "tries"))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (what, code, details)
        if key is not None:
            assert "use an ECDSA key on P-256" in details, details
    assert len(controller.events(type="drone_enrolled")) == enrolled_before

    for name, key in (
        ("p384", ec.generate_private_key(ec.SECP384R1())),
        ("rsa2048", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    ):
        code, details, cert_pem = asyncio.run(enroll_with(token, key, name))
        assert code == grpc.StatusCode.OK, (name, details)
        assert load_cert(asyncio.run(renew_with(key, cert_pem)))
        token = controller.create_token()
