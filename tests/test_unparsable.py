"""Bytes that do not parse, on every RPC other than Connect (test_gateway_protocol
covers that one): INVALID_ARGUMENT naming the message, one protocol_error event,
no traceback. And unknown fields in a known message: ignored, and counted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from test_gateway_protocol import Raw, enrolled, heartbeat, hello, raw_exchange

from swarm.v1 import gateway_pb2_grpc, shell_pb2

from support.procs import Controller, wait_for

GARBAGE = b"\xff\xff\xff\x07not protobuf"  # a field number out of range, wire type 7


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    proc = Controller(tmp_path_factory.mktemp("unparsable"))
    proc.start()
    yield proc
    proc.kill()


@pytest.fixture(scope="module")
def drone(controller: Controller, tmp_path_factory: pytest.TempPathFactory) -> Raw:
    return enrolled(controller, tmp_path_factory.mktemp("drones"), "garbler")


async def send_raw(
    target: str, creds: grpc.ChannelCredentials, method: str, shape: str, frames: list[bytes]
) -> tuple[grpc.StatusCode, str]:
    """Call ``method`` with frames as they are (identity serializers)."""
    async with grpc.aio.secure_channel(target, creds) as channel:
        try:
            if shape == "unary":
                await channel.unary_unary(method, request_serializer=bytes, response_deserializer=bytes)(
                    frames[0], timeout=10
                )
            elif shape == "client_stream":
                call = channel.stream_unary(method, request_serializer=bytes, response_deserializer=bytes)(
                    timeout=10
                )
                for frame in frames:
                    await call.write(frame)
                await call.done_writing()
                await call
            else:
                bidi = channel.stream_stream(method, request_serializer=bytes, response_deserializer=bytes)(
                    timeout=10
                )
                for frame in frames:
                    await bidi.write(frame)
                while await bidi.read() is not grpc.aio.EOF:
                    pass
                return await bidi.code(), await bidi.details() or ""
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
    raise AssertionError(f"{method} accepted garbage")


def protocol_errors(controller: Controller, method: str) -> list[dict[str, Any]]:
    return [e for e in controller.events(type="protocol_error") if e["data"].get("method") == method]


CALLS = [
    ("/swarm.v1.Enrollment/Renew", "unary", "swarm.v1.RenewRequest"),
    ("/swarm.v1.Builds/QueryUpload", "unary", "swarm.v1.UploadQuery"),
    ("/swarm.v1.Builds/BuildLog", "client_stream", "swarm.v1.LogChunk"),
    ("/swarm.v1.Builds/Upload", "client_stream", "swarm.v1.ArtifactChunk"),
    ("/swarm.v1.Channels/Shell", "bidi", "swarm.v1.ShellFrame"),
]


@pytest.mark.parametrize(("method", "shape", "message"), CALLS)
def test_garbage_from_a_drone_is_invalid_argument_with_an_event(
    controller: Controller, drone: Raw, method: str, shape: str, message: str
) -> None:
    code, details = asyncio.run(send_raw(controller.grpc_target, drone.creds, method, shape, [GARBAGE]))
    assert (code, details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"a message that does not parse as {message}",
    )
    events = protocol_errors(controller, method)
    assert len(events) == 1
    assert events[0]["drone_id"] == drone.drone_id
    assert events[0]["data"]["peer"].startswith("ipv4:127.0.0.1:")
    assert "Traceback" not in controller.log()


def test_garbage_to_enroll_without_a_certificate_is_invalid_argument_with_an_event(
    controller: Controller,
) -> None:
    no_cert = grpc.ssl_channel_credentials(
        root_certificates=(controller.data_dir / "pki" / "ca.crt").read_bytes()
    )
    method = "/swarm.v1.Enrollment/Enroll"
    code, details = asyncio.run(send_raw(controller.enroll_target, no_cert, method, "unary", [GARBAGE]))
    assert (code, details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "a message that does not parse as swarm.v1.EnrollRequest",
    )
    [event] = protocol_errors(controller, method)
    assert event["drone_id"] is None
    assert "Traceback" not in controller.log()


def test_a_channel_stream_that_does_not_begin_with_attach_gets_an_event(
    controller: Controller, drone: Raw
) -> None:
    method = "/swarm.v1.Channels/Shell"
    before = len(protocol_errors(controller, method))
    frame = shell_pb2.ShellFrame(output=b"hello").SerializeToString()
    code, details = asyncio.run(send_raw(controller.grpc_target, drone.creds, method, "bidi", [frame]))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "the first frame must be attach")
    events = protocol_errors(controller, method)
    assert len(events) == before + 1
    assert "began with output, not attach" in events[-1]["message"]
    assert events[-1]["drone_id"] == drone.drone_id


def test_garbage_on_an_attached_channel_ends_it_invalid_argument_not_ok(
    controller: Controller, drone: Raw
) -> None:
    """The channel's reader task meets the garbage, not the servicer: the call
    still ends INVALID_ARGUMENT with an event, and the exec waiting on it says why."""
    method = "/swarm.v1.Channels/Shell"
    before = len(protocol_errors(controller, method))
    command = json.dumps({"command": "true", "timeout": 10}).encode()

    async def scenario() -> tuple[grpc.StatusCode, str, str]:
        async with grpc.aio.secure_channel(controller.grpc_target, drone.creds) as channel:
            connect = gateway_pb2_grpc.DroneGatewayStub(channel).Connect()
            await connect.write(hello("garbler", drone.drone_id))
            await asyncio.wait_for(connect.read(), 10)  # the welcome
            exec_call = asyncio.create_task(
                asyncio.to_thread(controller.admin, "POST", "/admin/api/drones/garbler/exec", command)
            )
            reply = await asyncio.wait_for(connect.read(), 10)
            while not reply.HasField("open_channel"):
                reply = await asyncio.wait_for(connect.read(), 10)
            attach = shell_pb2.ShellFrame(attach=shell_pb2.Attach(channel_id=reply.open_channel.channel_id))
            code, details = await send_raw(
                controller.grpc_target, drone.creds, method, "bidi", [attach.SerializeToString(), GARBAGE]
            )
            exec_status, exec_body = await exec_call
            connect.cancel()
            return code, details, f"{exec_status} {exec_body['reason']}"

    code, details, exec_said = asyncio.run(scenario())
    assert (code, details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "a message that does not parse as swarm.v1.ShellFrame",
    )
    assert exec_said == "200 the drone sent a message that does not parse as swarm.v1.ShellFrame"
    events = protocol_errors(controller, method)
    assert len(events) == before + 1 and events[-1]["drone_id"] == drone.drone_id
    assert "Traceback" not in controller.log()


def test_unknown_fields_in_a_known_message_are_ignored_and_counted(
    controller: Controller, drone: Raw, tmp_path: Path
) -> None:
    # A heartbeat of a newer agent: field 100 of Heartbeat (a varint) is not in our .proto.
    plain = heartbeat(3)
    body = plain.heartbeat.SerializeToString() + bytes([0xA0, 0x06, 0x01])
    newer = bytes([0x12, len(body)]) + body  # AgentMessage field 2 (heartbeat), length-delimited
    seen: dict[str, Any] = {}

    def look() -> None:
        def counted() -> bool:
            _, reply = controller.admin("GET", f"/admin/api/protocol?drone={drone.drone_id}&type=heartbeat")
            seen.update(reply)
            return len(reply["entries"]) == 2

        wait_for(counted, what="both heartbeats in the protocol log")
        seen["node"] = controller.node("garbler")

    frames = [hello("garbler", drone.drone_id).SerializeToString(), newer, heartbeat(4).SerializeToString()]
    code, _, _ = asyncio.run(raw_exchange(controller.grpc_target, drone.creds, frames, look))
    assert code == "open"
    assert [e["unknown_fields"] for e in seen["entries"]] == [True, False]
    assert seen["unknown_fields"] == {"heartbeat": 1}
    assert seen["node"]["status"] == "online"
