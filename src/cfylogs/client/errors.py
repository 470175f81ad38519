"""What a client call can fail with: one root, one type per kind of answer.

The server answers errors with `{"data": null, "error": {"code", "message"}}`;
each HTTP status maps to one class here, carrying that message. `retryable`
tells a caller whether trying again later can help (connection failures,
5xx, 429, 503) or not (every other 4xx: the request itself is wrong).
"""

from __future__ import annotations


class ClientError(Exception):
    """Root of every error of `cfylogs.client`."""

    #: True when the same request may succeed later.
    retryable: bool = False

    def __init__(
        self,
        message: str,
        status: int | None = None,
        code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        #: HTTP status of the answer; None when there was no answer.
        self.status = status
        #: `error.code` of the answer's body (504 for "not found", as Alien4Cloud has it).
        self.code = code
        #: Seconds the server asked to wait (`Retry-After`), if it said.
        self.retry_after = retry_after


class TransportError(ClientError):
    """No answer: the connection failed, was cut, or timed out."""

    retryable = True


class ProtocolError(ClientError):
    """An answer that is not what the API promises (wrong shape, not JSON)."""


class BadRequest(ClientError):
    """400, 413, 415 and other refusals of the request as it is."""


class Unauthorized(ClientError):
    """401 or 403: a token or client certificate is missing or not accepted."""


class NotFound(ClientError):
    """404 (`error.code` 504): no such registration (removed, or expired and not revived)."""


class Conflict(ClientError):
    """409: acknowledging a batch that was never delivered; nothing changed."""


class Unavailable(ClientError):
    """503 or 429: the server cannot take the request now; `retry_after` says when to retry."""

    retryable = True


class ServerError(ClientError):
    """Any other 5xx."""

    retryable = True


def error_for_status(
    status: int, message: str, code: int | None, retry_after: float | None
) -> ClientError:
    """The error that an answer with `status` stands for."""
    kind: type[ClientError]
    if status in (401, 403):
        kind = Unauthorized
    elif status == 404:
        kind = NotFound
    elif status == 409:
        kind = Conflict
    elif status in (429, 503):
        kind = Unavailable
    elif status >= 500:
        kind = ServerError
    else:
        kind = BadRequest
    return kind(message, status, code, retry_after)
