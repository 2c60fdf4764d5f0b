from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OpenChannel(_message.Message):
    __slots__ = ("channel_id", "kind", "rows", "cols", "command", "timeout_s", "source", "lines", "follow")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[OpenChannel.Kind]
        SHELL: _ClassVar[OpenChannel.Kind]
        EXEC: _ClassVar[OpenChannel.Kind]
        LOG: _ClassVar[OpenChannel.Kind]
    KIND_UNSPECIFIED: OpenChannel.Kind
    SHELL: OpenChannel.Kind
    EXEC: OpenChannel.Kind
    LOG: OpenChannel.Kind
    CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    channel_id: str
    kind: OpenChannel.Kind
    rows: int
    cols: int
    command: str
    timeout_s: float
    source: str
    lines: int
    follow: bool
    def __init__(self, channel_id: _Optional[str] = ..., kind: _Optional[_Union[OpenChannel.Kind, str]] = ..., rows: _Optional[int] = ..., cols: _Optional[int] = ..., command: _Optional[str] = ..., timeout_s: _Optional[float] = ..., source: _Optional[str] = ..., lines: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class Attach(_message.Message):
    __slots__ = ("channel_id",)
    CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    channel_id: str
    def __init__(self, channel_id: _Optional[str] = ...) -> None: ...

class Resize(_message.Message):
    __slots__ = ("rows", "cols")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    rows: int
    cols: int
    def __init__(self, rows: _Optional[int] = ..., cols: _Optional[int] = ...) -> None: ...

class Close(_message.Message):
    __slots__ = ("exited", "exit_code", "signal", "reason", "timed_out", "error")
    EXITED_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    exited: bool
    exit_code: int
    signal: int
    reason: str
    timed_out: bool
    error: str
    def __init__(self, exited: _Optional[bool] = ..., exit_code: _Optional[int] = ..., signal: _Optional[int] = ..., reason: _Optional[str] = ..., timed_out: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class ShellFrame(_message.Message):
    __slots__ = ("attach", "input", "output", "stderr", "resize", "close")
    ATTACH_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    attach: Attach
    input: bytes
    output: bytes
    stderr: bytes
    resize: Resize
    close: Close
    def __init__(self, attach: _Optional[_Union[Attach, _Mapping]] = ..., input: _Optional[bytes] = ..., output: _Optional[bytes] = ..., stderr: _Optional[bytes] = ..., resize: _Optional[_Union[Resize, _Mapping]] = ..., close: _Optional[_Union[Close, _Mapping]] = ...) -> None: ...
