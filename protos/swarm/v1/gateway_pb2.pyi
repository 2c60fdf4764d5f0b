from swarm.v1 import fleet_pb2 as _fleet_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentMessage(_message.Message):
    __slots__ = ("hello", "heartbeat", "pong")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    hello: _fleet_pb2.Hello
    heartbeat: _fleet_pb2.Heartbeat
    pong: _fleet_pb2.Pong
    def __init__(self, hello: _Optional[_Union[_fleet_pb2.Hello, _Mapping]] = ..., heartbeat: _Optional[_Union[_fleet_pb2.Heartbeat, _Mapping]] = ..., pong: _Optional[_Union[_fleet_pb2.Pong, _Mapping]] = ...) -> None: ...

class ControllerMessage(_message.Message):
    __slots__ = ("welcome", "ping")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    welcome: _fleet_pb2.Welcome
    ping: _fleet_pb2.Ping
    def __init__(self, welcome: _Optional[_Union[_fleet_pb2.Welcome, _Mapping]] = ..., ping: _Optional[_Union[_fleet_pb2.Ping, _Mapping]] = ...) -> None: ...
