"""Every error the relay reports, each carrying the HTTP status it maps to.

The HTTP layer renders any `RelayError` as the spec's error body
(`{"data": null, "error": {"code": ..., "message": ...}}`) in one place;
nothing else in the code base knows about status codes.
"""

from __future__ import annotations


class RelayError(Exception):
    """Root of the errors a client can cause or observe."""

    status: int = 500
    #: `error.code` of the body; the HTTP status unless the spec says otherwise.
    code: int | None = None
    #: Seconds a client should wait before retrying (503 only).
    retry_after: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def error_code(self) -> int:
        return self.code if self.code is not None else self.status


class BadRequest(RelayError):
    status = 400


class Unauthorized(RelayError):
    status = 401


class Forbidden(RelayError):
    status = 403


class NotFound(RelayError):
    """Alien4Cloud's NOT_FOUND_ERROR: HTTP 404 with `error.code` 504."""

    status = 404
    code = 504


class RegistrationNotFound(NotFound):
    def __init__(self, registration_id: str) -> None:
        super().__init__(f"No registration can be found for id {registration_id}")
        self.registration_id = registration_id


class RegistrationExpired(RegistrationNotFound):
    """The registration's lease ran out; it may be revived under the same id."""


class MethodNotAllowed(RelayError):
    status = 405

    def __init__(self, message: str, allow: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        #: The methods the path takes (the `Allow` header of the answer).
        self.allow = allow


class RequestTimeout(RelayError):
    status = 408


class Conflict(RelayError):
    status = 409


class BatchNotDelivered(Conflict):
    def __init__(self, registration_id: str, batch_id: int, pending: int | None) -> None:
        hint = (
            f"the pending batch is {pending}"
            if pending is not None
            else "no batch is pending: fetch one first"
        )
        super().__init__(
            f"Batch {batch_id} was never delivered to registration {registration_id}; "
            f"{hint}. Nothing was acknowledged."
        )


class PayloadTooLarge(RelayError):
    status = 413


class URITooLong(RelayError):
    status = 414


class UnsupportedEncoding(RelayError):
    status = 415


class HeadersTooLarge(RelayError):
    status = 431


class HttpVersionNotSupported(RelayError):
    status = 505


class StorageUnavailable(RelayError):
    """The store cannot take the request now; clients should retry (503)."""

    status = 503
    retry_after = 1


class ConfigError(Exception):
    """A setting is invalid; start-up stops with exit status 2."""


class StorageCorrupt(ConfigError):
    """The state on disk cannot be used as it is; start-up stops, nothing is wiped."""


class StoreInUse(StorageCorrupt):
    """Another process holds the embedded store (a running server, say)."""
