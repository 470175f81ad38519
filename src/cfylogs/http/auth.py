"""Who may call what: the ingest-only plain-HTTP port and the shared-secret tokens.

Tokens (`security.ingest_token`, `security.consumer_token`) are compared in
constant time and never logged or echoed: a refusal says which setting the
caller lacks, not what was presented.
"""

from __future__ import annotations

import hmac

from cfylogs.errors import Forbidden, Unauthorized

_BEARER = b"bearer "


def check_ingest_only(method: str, path: str) -> None:
    """On the plain-HTTP port of SSL mode only `POST /api/v1/logs` (slash tolerated) goes."""
    if method == "POST" and path.rstrip("/") == "/api/v1/logs":
        return
    raise Forbidden(
        f"{method} {path} is not served on this plain-HTTP port, which only takes "
        "POST /api/v1/logs; use the HTTPS port"
    )


def check_bearer(authorization: bytes | None, expected: bytes | None, setting: str) -> None:
    """Raise `Unauthorized` unless `Authorization: Bearer <expected>` (when a token is set)."""
    if expected is None:
        return
    presented = _bearer_token(authorization)
    # compare_digest takes time independent of where the bytes differ
    if presented is None or not hmac.compare_digest(presented, expected):
        raise Unauthorized(
            "missing or wrong token: send `Authorization: Bearer <token>` with the token "
            f"configured as {setting}"
        )


def _bearer_token(authorization: bytes | None) -> bytes | None:
    if authorization is None or authorization[:7].lower() != _BEARER:
        return None
    return authorization[7:].strip()
