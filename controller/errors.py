"""Controller errors, mapped to gRPC and HTTP status at each boundary.

    SwarmError                     500 / INTERNAL (message not shown)
    +-- InvalidArgument            400 / INVALID_ARGUMENT
    +-- NotFound                   404 / NOT_FOUND
    +-- MethodNotAllowed           405 / UNIMPLEMENTED
    +-- FailedPrecondition         409 / FAILED_PRECONDITION
    +-- Unauthenticated            401 / UNAUTHENTICATED
    +-- PermissionDenied           403 / PERMISSION_DENIED
    +-- TooLarge                   413 / RESOURCE_EXHAUSTED
    +-- UnsupportedMediaType       415 / INVALID_ARGUMENT
    +-- Unavailable                503 / UNAVAILABLE
        +-- store.base.StoreUnavailable  (the database, for now)

Only subclasses carry a message meant for the client; anything else is
logged and answered with a generic internal error.
"""

from __future__ import annotations


class SwarmError(Exception):
    http_status = 500
    grpc_code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(SwarmError):
    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class NotFound(SwarmError):
    http_status = 404
    grpc_code = "NOT_FOUND"


class MethodNotAllowed(SwarmError):
    http_status = 405
    grpc_code = "UNIMPLEMENTED"


class FailedPrecondition(SwarmError):
    http_status = 409
    grpc_code = "FAILED_PRECONDITION"


class Unauthenticated(SwarmError):
    http_status = 401
    grpc_code = "UNAUTHENTICATED"


class PermissionDenied(SwarmError):
    http_status = 403
    grpc_code = "PERMISSION_DENIED"


class TooLarge(SwarmError):
    """A request body (an upload) beyond its bound."""

    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class UnsupportedMediaType(SwarmError):
    """A request body in a format or charset the endpoint does not read."""

    http_status = 415
    grpc_code = "INVALID_ARGUMENT"


class Unavailable(SwarmError):
    http_status = 503
    grpc_code = "UNAVAILABLE"
