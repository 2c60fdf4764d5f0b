from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PayloadMeta(_message.Message):
    __slots__ = ("kind", "version", "sha256", "size", "expires_at_unix", "rollback", "drone_id", "deploy_id")
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    DRONE_ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOY_ID_FIELD_NUMBER: _ClassVar[int]
    kind: str
    version: int
    sha256: str
    size: int
    expires_at_unix: int
    rollback: bool
    drone_id: str
    deploy_id: str
    def __init__(self, kind: _Optional[str] = ..., version: _Optional[int] = ..., sha256: _Optional[str] = ..., size: _Optional[int] = ..., expires_at_unix: _Optional[int] = ..., rollback: _Optional[bool] = ..., drone_id: _Optional[str] = ..., deploy_id: _Optional[str] = ...) -> None: ...

class ApplyPayload(_message.Message):
    __slots__ = ("meta", "signature", "confirm_within_s")
    META_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CONFIRM_WITHIN_S_FIELD_NUMBER: _ClassVar[int]
    meta: bytes
    signature: bytes
    confirm_within_s: int
    def __init__(self, meta: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., confirm_within_s: _Optional[int] = ...) -> None: ...

class PayloadStatus(_message.Message):
    __slots__ = ("kind", "version", "state", "reason", "deploy_id")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[PayloadStatus.State]
        WAITING: _ClassVar[PayloadStatus.State]
        FETCHING: _ClassVar[PayloadStatus.State]
        APPLIED: _ClassVar[PayloadStatus.State]
        REFUSED: _ClassVar[PayloadStatus.State]
        FAILED: _ClassVar[PayloadStatus.State]
        ROLLED_BACK: _ClassVar[PayloadStatus.State]
    STATE_UNSPECIFIED: PayloadStatus.State
    WAITING: PayloadStatus.State
    FETCHING: PayloadStatus.State
    APPLIED: PayloadStatus.State
    REFUSED: PayloadStatus.State
    FAILED: PayloadStatus.State
    ROLLED_BACK: PayloadStatus.State
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DEPLOY_ID_FIELD_NUMBER: _ClassVar[int]
    kind: str
    version: int
    state: PayloadStatus.State
    reason: str
    deploy_id: str
    def __init__(self, kind: _Optional[str] = ..., version: _Optional[int] = ..., state: _Optional[_Union[PayloadStatus.State, str]] = ..., reason: _Optional[str] = ..., deploy_id: _Optional[str] = ...) -> None: ...

class PayloadVersion(_message.Message):
    __slots__ = ("kind", "version", "sha256")
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    kind: str
    version: int
    sha256: str
    def __init__(self, kind: _Optional[str] = ..., version: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class PayloadRequest(_message.Message):
    __slots__ = ("kind", "version", "offset")
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    kind: str
    version: int
    offset: int
    def __init__(self, kind: _Optional[str] = ..., version: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class PayloadChunk(_message.Message):
    __slots__ = ("offset", "data")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...
