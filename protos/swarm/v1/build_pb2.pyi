from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartBuild(_message.Message):
    __slots__ = ("job_id", "build_id", "cpv", "timeout_s", "binhost_url", "env", "test_build")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BUILD_ID_FIELD_NUMBER: _ClassVar[int]
    CPV_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    BINHOST_URL_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    TEST_BUILD_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    build_id: str
    cpv: str
    timeout_s: int
    binhost_url: str
    env: _containers.ScalarMap[str, str]
    test_build: bool
    def __init__(self, job_id: _Optional[str] = ..., build_id: _Optional[str] = ..., cpv: _Optional[str] = ..., timeout_s: _Optional[int] = ..., binhost_url: _Optional[str] = ..., env: _Optional[_Mapping[str, str]] = ..., test_build: _Optional[bool] = ...) -> None: ...

class CancelBuild(_message.Message):
    __slots__ = ("build_id", "reason")
    BUILD_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    build_id: str
    reason: str
    def __init__(self, build_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class BuildEvent(_message.Message):
    __slots__ = ("build_id", "job_id", "kind", "exit_code", "reason", "duration_s", "artifacts")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[BuildEvent.Kind]
        STARTED: _ClassVar[BuildEvent.Kind]
        SUCCEEDED: _ClassVar[BuildEvent.Kind]
        FAILED: _ClassVar[BuildEvent.Kind]
        REFUSED: _ClassVar[BuildEvent.Kind]
        CANCELLED: _ClassVar[BuildEvent.Kind]
    KIND_UNSPECIFIED: BuildEvent.Kind
    STARTED: BuildEvent.Kind
    SUCCEEDED: BuildEvent.Kind
    FAILED: BuildEvent.Kind
    REFUSED: BuildEvent.Kind
    CANCELLED: BuildEvent.Kind
    BUILD_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    build_id: str
    job_id: str
    kind: BuildEvent.Kind
    exit_code: int
    reason: str
    duration_s: float
    artifacts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, build_id: _Optional[str] = ..., job_id: _Optional[str] = ..., kind: _Optional[_Union[BuildEvent.Kind, str]] = ..., exit_code: _Optional[int] = ..., reason: _Optional[str] = ..., duration_s: _Optional[float] = ..., artifacts: _Optional[_Iterable[str]] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("build_id", "offset", "data")
    BUILD_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    build_id: str
    offset: int
    data: bytes
    def __init__(self, build_id: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class LogAck(_message.Message):
    __slots__ = ("received",)
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    received: int
    def __init__(self, received: _Optional[int] = ...) -> None: ...

class UploadQuery(_message.Message):
    __slots__ = ("build_id", "cpv", "filename", "size", "sha256")
    BUILD_ID_FIELD_NUMBER: _ClassVar[int]
    CPV_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    build_id: str
    cpv: str
    filename: str
    size: int
    sha256: str
    def __init__(self, build_id: _Optional[str] = ..., cpv: _Optional[str] = ..., filename: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class UploadStatus(_message.Message):
    __slots__ = ("received", "complete")
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    received: int
    complete: bool
    def __init__(self, received: _Optional[int] = ..., complete: _Optional[bool] = ...) -> None: ...

class ArtifactChunk(_message.Message):
    __slots__ = ("query", "offset", "data", "crc32")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CRC32_FIELD_NUMBER: _ClassVar[int]
    query: UploadQuery
    offset: int
    data: bytes
    crc32: int
    def __init__(self, query: _Optional[_Union[UploadQuery, _Mapping]] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., crc32: _Optional[int] = ...) -> None: ...
