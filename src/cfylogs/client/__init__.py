"""Client library of cfylogs: talk to a relay from Python, blocking or asyncio.

    from cfylogs.client import Client, Consumer, ConsumerOptions

    with Client("https://manager:8200", token="...", tls=TlsOptions(cafile="ca.pem")) as client:
        Consumer(client, handle, ConsumerOptions(registration_id=saved_id)).run()

See docs/CLIENT.md.
"""

from cfylogs.client.consumer import (
    AsyncConsumer,
    Backoff,
    Consumer,
    ConsumerOptions,
    ConsumerStats,
    GiveUp,
)
from cfylogs.client.errors import (
    BadRequest,
    ClientError,
    Conflict,
    NotFound,
    ProtocolError,
    ServerError,
    TransportError,
    Unauthorized,
    Unavailable,
)
from cfylogs.client.events import InputError, batched, iter_events
from cfylogs.client.http import AsyncClient, Client, TlsOptions
from cfylogs.client.models import (
    AckResult,
    Batch,
    DeadLetter,
    DeadLetterPage,
    Health,
    PushResult,
    Registration,
    ReplayResult,
    StorageHealth,
)
from cfylogs.client.pusher import PushFailed, push_batches

__all__ = [
    "AckResult",
    "AsyncClient",
    "AsyncConsumer",
    "Backoff",
    "BadRequest",
    "Batch",
    "Client",
    "ClientError",
    "Conflict",
    "Consumer",
    "ConsumerOptions",
    "ConsumerStats",
    "DeadLetter",
    "DeadLetterPage",
    "GiveUp",
    "Health",
    "InputError",
    "NotFound",
    "ProtocolError",
    "PushFailed",
    "PushResult",
    "Registration",
    "ReplayResult",
    "ServerError",
    "StorageHealth",
    "TlsOptions",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "batched",
    "iter_events",
    "push_batches",
]
