from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class EnrollRequest(_message.Message):
    __slots__ = ("token", "csr_pem", "drone_id", "name")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    DRONE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    token: str
    csr_pem: bytes
    drone_id: str
    name: str
    def __init__(self, token: _Optional[str] = ..., csr_pem: _Optional[bytes] = ..., drone_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("certificate_pem", "ca_pem", "drone_id", "not_after_unix", "payload_public_key")
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_PEM_FIELD_NUMBER: _ClassVar[int]
    DRONE_ID_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_UNIX_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    certificate_pem: bytes
    ca_pem: bytes
    drone_id: str
    not_after_unix: int
    payload_public_key: bytes
    def __init__(self, certificate_pem: _Optional[bytes] = ..., ca_pem: _Optional[bytes] = ..., drone_id: _Optional[str] = ..., not_after_unix: _Optional[int] = ..., payload_public_key: _Optional[bytes] = ...) -> None: ...

class RenewRequest(_message.Message):
    __slots__ = ("csr_pem",)
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    csr_pem: bytes
    def __init__(self, csr_pem: _Optional[bytes] = ...) -> None: ...

class RenewResponse(_message.Message):
    __slots__ = ("certificate_pem", "not_after_unix", "payload_public_key")
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_UNIX_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    certificate_pem: bytes
    not_after_unix: int
    payload_public_key: bytes
    def __init__(self, certificate_pem: _Optional[bytes] = ..., not_after_unix: _Optional[int] = ..., payload_public_key: _Optional[bytes] = ...) -> None: ...
