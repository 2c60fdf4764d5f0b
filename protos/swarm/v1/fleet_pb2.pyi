from swarm.v1 import payload_pb2 as _payload_pb2
from swarm.v1 import build_pb2 as _build_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DroneType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DRONE_TYPE_UNKNOWN: _ClassVar[DroneType]
    DRONE_TYPE_LXC: _ClassVar[DroneType]
    DRONE_TYPE_QEMU: _ClassVar[DroneType]
    DRONE_TYPE_BARE_METAL: _ClassVar[DroneType]
DRONE_TYPE_UNKNOWN: DroneType
DRONE_TYPE_LXC: DroneType
DRONE_TYPE_QEMU: DroneType
DRONE_TYPE_BARE_METAL: DroneType

class Hello(_message.Message):
    __slots__ = ("drone_id", "name", "cores", "drone_type", "network", "agent_version", "heartbeat_interval_ms", "hostname", "payload_version", "current_job_id", "recent_builds", "instance_id", "process_started_at_unix_ns", "drone_type_reason", "protocol_revision", "features", "payloads")
    DRONE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CORES_FIELD_NUMBER: _ClassVar[int]
    DRONE_TYPE_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_VERSION_FIELD_NUMBER: _ClassVar[int]
    CURRENT_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RECENT_BUILDS_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    PROCESS_STARTED_AT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    DRONE_TYPE_REASON_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_REVISION_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    drone_id: str
    name: str
    cores: int
    drone_type: DroneType
    network: str
    agent_version: str
    heartbeat_interval_ms: int
    hostname: str
    payload_version: str
    current_job_id: str
    recent_builds: _containers.RepeatedCompositeFieldContainer[_build_pb2.BuildEvent]
    instance_id: str
    process_started_at_unix_ns: int
    drone_type_reason: str
    protocol_revision: int
    features: _containers.RepeatedScalarFieldContainer[str]
    payloads: _containers.RepeatedCompositeFieldContainer[_payload_pb2.PayloadVersion]
    def __init__(self, drone_id: _Optional[str] = ..., name: _Optional[str] = ..., cores: _Optional[int] = ..., drone_type: _Optional[_Union[DroneType, str]] = ..., network: _Optional[str] = ..., agent_version: _Optional[str] = ..., heartbeat_interval_ms: _Optional[int] = ..., hostname: _Optional[str] = ..., payload_version: _Optional[str] = ..., current_job_id: _Optional[str] = ..., recent_builds: _Optional[_Iterable[_Union[_build_pb2.BuildEvent, _Mapping]]] = ..., instance_id: _Optional[str] = ..., process_started_at_unix_ns: _Optional[int] = ..., drone_type_reason: _Optional[str] = ..., protocol_revision: _Optional[int] = ..., features: _Optional[_Iterable[str]] = ..., payloads: _Optional[_Iterable[_Union[_payload_pb2.PayloadVersion, _Mapping]]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("drone_id", "server_time_unix_ns", "controller_version", "protocol_revision", "features")
    DRONE_ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_REVISION_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    drone_id: str
    server_time_unix_ns: int
    controller_version: str
    protocol_revision: int
    features: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, drone_id: _Optional[str] = ..., server_time_unix_ns: _Optional[int] = ..., controller_version: _Optional[str] = ..., protocol_revision: _Optional[int] = ..., features: _Optional[_Iterable[str]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("seq", "sent_at_unix_ns", "load1", "load5", "load15", "cpu_percent", "memory_percent", "disk_percent", "disk_free_bytes", "emerge_running", "current_job_id", "pong")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    LOAD1_FIELD_NUMBER: _ClassVar[int]
    LOAD5_FIELD_NUMBER: _ClassVar[int]
    LOAD15_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    DISK_PERCENT_FIELD_NUMBER: _ClassVar[int]
    DISK_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    EMERGE_RUNNING_FIELD_NUMBER: _ClassVar[int]
    CURRENT_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    seq: int
    sent_at_unix_ns: int
    load1: float
    load5: float
    load15: float
    cpu_percent: float
    memory_percent: float
    disk_percent: float
    disk_free_bytes: int
    emerge_running: bool
    current_job_id: str
    pong: Pong
    def __init__(self, seq: _Optional[int] = ..., sent_at_unix_ns: _Optional[int] = ..., load1: _Optional[float] = ..., load5: _Optional[float] = ..., load15: _Optional[float] = ..., cpu_percent: _Optional[float] = ..., memory_percent: _Optional[float] = ..., disk_percent: _Optional[float] = ..., disk_free_bytes: _Optional[int] = ..., emerge_running: _Optional[bool] = ..., current_job_id: _Optional[str] = ..., pong: _Optional[_Union[Pong, _Mapping]] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ("seq", "sent_at_unix_ns", "answer_within_ms")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    ANSWER_WITHIN_MS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    sent_at_unix_ns: int
    answer_within_ms: int
    def __init__(self, seq: _Optional[int] = ..., sent_at_unix_ns: _Optional[int] = ..., answer_within_ms: _Optional[int] = ...) -> None: ...

class Check(_message.Message):
    __slots__ = ("name", "ok", "detail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    ok: bool
    detail: str
    def __init__(self, name: _Optional[str] = ..., ok: _Optional[bool] = ..., detail: _Optional[str] = ...) -> None: ...

class DroneStatus(_message.Message):
    __slots__ = ("emerge_running", "current_job_id", "load1", "disk_percent", "disk_free_bytes", "checks")
    EMERGE_RUNNING_FIELD_NUMBER: _ClassVar[int]
    CURRENT_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LOAD1_FIELD_NUMBER: _ClassVar[int]
    DISK_PERCENT_FIELD_NUMBER: _ClassVar[int]
    DISK_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    emerge_running: bool
    current_job_id: str
    load1: float
    disk_percent: float
    disk_free_bytes: int
    checks: _containers.RepeatedCompositeFieldContainer[Check]
    def __init__(self, emerge_running: _Optional[bool] = ..., current_job_id: _Optional[str] = ..., load1: _Optional[float] = ..., disk_percent: _Optional[float] = ..., disk_free_bytes: _Optional[int] = ..., checks: _Optional[_Iterable[_Union[Check, _Mapping]]] = ...) -> None: ...

class Pong(_message.Message):
    __slots__ = ("seq", "sent_at_unix_ns", "status", "held_ns")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    HELD_NS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    sent_at_unix_ns: int
    status: DroneStatus
    held_ns: int
    def __init__(self, seq: _Optional[int] = ..., sent_at_unix_ns: _Optional[int] = ..., status: _Optional[_Union[DroneStatus, _Mapping]] = ..., held_ns: _Optional[int] = ...) -> None: ...

class RestartService(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class DuplicateDrone(_message.Message):
    __slots__ = ("instance_id", "peer", "hostname", "refused_at_unix_ns")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    REFUSED_AT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    peer: str
    hostname: str
    refused_at_unix_ns: int
    def __init__(self, instance_id: _Optional[str] = ..., peer: _Optional[str] = ..., hostname: _Optional[str] = ..., refused_at_unix_ns: _Optional[int] = ...) -> None: ...
