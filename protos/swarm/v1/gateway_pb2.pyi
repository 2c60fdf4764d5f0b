from swarm.v1 import build_pb2 as _build_pb2
from swarm.v1 import fleet_pb2 as _fleet_pb2
from swarm.v1 import payload_pb2 as _payload_pb2
from swarm.v1 import shell_pb2 as _shell_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentMessage(_message.Message):
    __slots__ = ("hello", "heartbeat", "pong", "build_event", "payload_status")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    BUILD_EVENT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_STATUS_FIELD_NUMBER: _ClassVar[int]
    hello: _fleet_pb2.Hello
    heartbeat: _fleet_pb2.Heartbeat
    pong: _fleet_pb2.Pong
    build_event: _build_pb2.BuildEvent
    payload_status: _payload_pb2.PayloadStatus
    def __init__(self, hello: _Optional[_Union[_fleet_pb2.Hello, _Mapping]] = ..., heartbeat: _Optional[_Union[_fleet_pb2.Heartbeat, _Mapping]] = ..., pong: _Optional[_Union[_fleet_pb2.Pong, _Mapping]] = ..., build_event: _Optional[_Union[_build_pb2.BuildEvent, _Mapping]] = ..., payload_status: _Optional[_Union[_payload_pb2.PayloadStatus, _Mapping]] = ...) -> None: ...

class ControllerMessage(_message.Message):
    __slots__ = ("welcome", "ping", "start_build", "cancel_build", "open_channel", "restart_service", "duplicate_drone", "apply_payload")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    START_BUILD_FIELD_NUMBER: _ClassVar[int]
    CANCEL_BUILD_FIELD_NUMBER: _ClassVar[int]
    OPEN_CHANNEL_FIELD_NUMBER: _ClassVar[int]
    RESTART_SERVICE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_DRONE_FIELD_NUMBER: _ClassVar[int]
    APPLY_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    welcome: _fleet_pb2.Welcome
    ping: _fleet_pb2.Ping
    start_build: _build_pb2.StartBuild
    cancel_build: _build_pb2.CancelBuild
    open_channel: _shell_pb2.OpenChannel
    restart_service: _fleet_pb2.RestartService
    duplicate_drone: _fleet_pb2.DuplicateDrone
    apply_payload: _payload_pb2.ApplyPayload
    def __init__(self, welcome: _Optional[_Union[_fleet_pb2.Welcome, _Mapping]] = ..., ping: _Optional[_Union[_fleet_pb2.Ping, _Mapping]] = ..., start_build: _Optional[_Union[_build_pb2.StartBuild, _Mapping]] = ..., cancel_build: _Optional[_Union[_build_pb2.CancelBuild, _Mapping]] = ..., open_channel: _Optional[_Union[_shell_pb2.OpenChannel, _Mapping]] = ..., restart_service: _Optional[_Union[_fleet_pb2.RestartService, _Mapping]] = ..., duplicate_drone: _Optional[_Union[_fleet_pb2.DuplicateDrone, _Mapping]] = ..., apply_payload: _Optional[_Union[_payload_pb2.ApplyPayload, _Mapping]] = ...) -> None: ...
