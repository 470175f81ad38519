"""What the commands share: exit statuses, and the options of the client commands.

The client commands (tail, push, registrations, status, unregister,
dead-letters) speak HTTP to a running relay through `cfylogs.client`, like
any other consumer. Exit status: 0 done, 1 failure (the server refused, could
not be reached, ...), 2 usage (click's own), 130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from cfylogs.client import Client, ClientError, TlsOptions
from cfylogs.client.state import StateError

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., Any])


# --- options every client command has


def connection_options(command: F) -> F:
    """`--cacert`, `--cert`, `--key`, `--token`, `--timeout`, gathered into `client_factory`."""
    existing = click.Path(exists=True, dir_okay=False, path_type=Path)
    options = [
        click.option("--cacert", type=existing, help="CA certificate(s) to check an https server."),
        click.option("--cert", type=existing, help="Client certificate (PEM) for mutual TLS."),
        click.option("--key", type=existing, help="Private key of --cert, if not in that file."),
        click.option(
            "--token",
            envvar="CFYLOGS_CLIENT_TOKEN",
            help="Bearer token (also $CFYLOGS_CLIENT_TOKEN).",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0.1),
            default=30.0,
            show_default=True,
            help="Seconds to wait for the server (beyond a long-poll).",
        ),
    ]

    @functools.wraps(command)
    def wrapper(
        *args: Any,
        cacert: Path | None,
        cert: Path | None,
        key: Path | None,
        token: str | None,
        timeout: float,
        **kwargs: Any,
    ) -> Any:
        if key is not None and cert is None:
            raise click.UsageError("--key needs --cert")
        tls = TlsOptions(cacert, cert, key) if cacert or cert else None

        def client_factory(url: str) -> Client:
            return Client(url, token=token, tls=tls, timeout=timeout)

        return command(*args, client_factory=client_factory, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]


def validate_url(_: click.Context, __: click.Parameter, value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise click.BadParameter(f"{value!r} is not an http:// or https:// URL")
    return value.rstrip("/")


url_argument = click.argument("url", callback=validate_url)
ClientFactory = Callable[[str], Client]


@contextlib.contextmanager
def failures() -> Iterator[None]:
    """A `ClientError` or an OS error becomes a one-line message and exit status 1."""
    try:
        yield
    except ClientError as exc:
        raise click.ClickException(describe(exc)) from exc
    except (OSError, StateError) as exc:
        raise click.ClickException(str(exc)) from exc


def describe(exc: ClientError) -> str:
    status = f" (HTTP {exc.status})" if exc.status else ""
    return f"{exc.message}{status}"


def default_state_path() -> Path:
    return Path(click.get_app_dir("cfylogs")) / "tail-state.json"


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")


def log_warnings_to_stderr() -> None:
    """The client library's warnings (retries, a registration replaced) to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("cfylogs: %(levelname)s: %(message)s"))
    client_log = logging.getLogger("cfylogs.client")
    client_log.addHandler(handler)
    client_log.setLevel(logging.WARNING)
    client_log.propagate = False
