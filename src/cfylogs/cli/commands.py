"""Client commands of `cfylogs`: tail, push, registrations, status, unregister.

They speak HTTP to a running relay through `cfylogs.client`, like any other
consumer. Exit status: 0 done, 1 failure (the server refused, could not be
reached, ...), 2 usage (click's own), 130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any, TypeVar

import click

from cfylogs.client import (
    Batch,
    Client,
    ClientError,
    Consumer,
    ConsumerOptions,
    InputError,
    PushFailed,
    Registration,
    TlsOptions,
    batched,
    iter_events,
    push_batches,
    render,
)
from cfylogs.client.state import StateError, StateFile

EXIT_INTERRUPTED = 130
#: Inputs at least this large get a progress bar (on a terminal).
PROGRESS_MIN_BYTES = 1024**2

F = TypeVar("F", bound=Callable[..., Any])


# --- options every command has


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


# --- tail


@click.command()
@url_argument
@click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where registrations are saved, one per server URL "
    "(default: tail-state.json in the user's cfylogs config directory).",
)
@click.option("--name", help="Label of a new registration (default: tail@<host>).")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["json", "pretty"]),
    help="json: one compact JSON event per line (default when stdout is not a terminal); "
    "pretty: time, level, deployment, node, message.",
)
@click.option("--once", is_flag=True, help="Print what is pending, then exit 0.")
@click.option(
    "--wait",
    type=click.FloatRange(0, 60),
    default=30.0,
    show_default=True,
    help="Long-poll seconds per request.",
)
@click.option("--max", "max_entries", type=click.IntRange(min=1), help="At most N events a batch.")
@connection_options
def tail(
    url: str,
    state_path: Path | None,
    name: str | None,
    output_format: str | None,
    once: bool,
    wait: float,
    max_entries: int | None,
    client_factory: ClientFactory,
) -> None:
    """Print the events a relay receives, as they come.

    Registers with the server at URL, or resumes the registration saved in
    the state file for that URL, so nothing is missed between two runs. A
    batch is acknowledged only once it was written and flushed: if tail is
    stopped (Ctrl-C, kill), the batch in hand comes again next time.

    \b
    Examples:
      cfylogs tail http://127.0.0.1:8200
      cfylogs tail https://manager:8200 --cacert ca.pem --token "$TOKEN" --format pretty
      cfylogs tail http://127.0.0.1:8200 --once > events.ndjson
    """
    _log_warnings_to_stderr()
    state = StateFile(state_path or default_state_path())
    out = sys.stdout
    pretty = (output_format or ("pretty" if out.isatty() else "json")) == "pretty"
    write = _pretty_writer(out, out.isatty()) if pretty else _json_writer(out)
    with failures():
        saved = state.registration(url)
        if saved:
            click.echo(f"resuming registration {saved}", err=True)
        options = ConsumerOptions(
            registration_id=saved,
            name=name or f"tail@{os.uname().nodename}",
            wait=0.0 if once else wait,
            max_entries=max_entries,
            once=once,
            reregister=True,
            retry_handler_errors=False,
            max_attempts=5 if once else None,
        )

        def registered(registration_id: str) -> None:
            state.save(url, registration_id)
            click.echo(f"registered as {registration_id} (saved in {state.path})", err=True)

        with client_factory(url) as client:
            consumer = Consumer(client, write, options, on_registered=registered)
            try:
                consumer.run()
            except KeyboardInterrupt:
                click.echo("interrupted: what was not acknowledged comes again next time", err=True)
                sys.exit(EXIT_INTERRUPTED)
            except BrokenPipeError:
                # The reader went away: the batch in hand stays unacknowledged.
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                sys.exit(1)


def _json_writer(out: IO[str]) -> Callable[[Batch], None]:
    binary = out.buffer  # type: ignore[attr-defined]

    def write(batch: Batch) -> None:
        binary.write(b"".join(render.compact(raw) + b"\n" for raw in batch.raw_entries))
        binary.flush()

    return write


def _pretty_writer(out: IO[str], color: bool) -> Callable[[Batch], None]:
    def write(batch: Batch) -> None:
        text = "".join(render.pretty_event(event, color) + "\n" for event in batch.entries)
        out.write(text)
        out.flush()

    return write


def _log_warnings_to_stderr() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("cfylogs: %(levelname)s: %(message)s"))
    client_log = logging.getLogger("cfylogs.client")
    client_log.addHandler(handler)
    client_log.setLevel(logging.WARNING)
    client_log.propagate = False


# --- push


@click.command()
@url_argument
@click.argument("file", type=click.File("rb"), default="-")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Events per request.",
)
@click.option(
    "--gzip", "use_gzip", is_flag=True, help="Compress requests (Content-Encoding: gzip)."
)
@connection_options
def push(
    url: str, file: IO[bytes], batch_size: int, use_gzip: bool, client_factory: ClientFactory
) -> None:
    """Send events to a relay from FILE (default: standard input).

    FILE holds JSON objects, arrays of objects, or NDJSON (one object a
    line), in any mix. Events are sent in order, in batches; a batch the
    server cannot take now (503) is retried; one it refuses stops the push
    with exit status 1 and says how many events went through before.

    \b
    Examples:
      cfylogs push http://127.0.0.1:8200 events.ndjson
      gunzip -c old-events.ndjson.gz | cfylogs push http://127.0.0.1:8200 --gzip
      echo '{"message": "hello"}' | cfylogs push http://127.0.0.1:8200
    """
    _log_warnings_to_stderr()
    started = time.monotonic()
    sent = [0]

    def count(batch: list[bytes]) -> None:
        sent[0] += len(batch)

    with failures(), client_factory(url) as client, _progress(file) as lines:
        batches = batched(iter_events(lines), batch_size)
        try:
            result = push_batches(client, batches, gzip=use_gzip, on_sent=count)
        except PushFailed as exc:
            raise click.ClickException(
                f"the server refused the events: {describe(exc)}; "
                f"{exc.accepted} events before that batch were accepted"
            ) from exc
        except InputError as exc:
            raise click.ClickException(
                f"{file.name}: {exc}; {sent[0]} events before it were sent"
            ) from exc
    elapsed = max(time.monotonic() - started, 1e-6)
    click.echo(
        f"pushed {result.accepted} events in {result.requests} requests "
        f"({result.accepted / elapsed:,.0f} events/s)"
    )


@contextlib.contextmanager
def _progress(file: IO[bytes]) -> Iterator[Iterable[bytes]]:
    """The file's lines, counted on a progress bar when it is large and stderr a terminal."""
    size = _regular_file_size(file)
    if size < PROGRESS_MIN_BYTES or not sys.stderr.isatty():
        yield file
        return
    started = time.monotonic()
    counted = {"lines": 0}

    def rate(_: object) -> str:
        per_sec = counted["lines"] / max(time.monotonic() - started, 1e-6)
        return f"{counted['lines']:,} lines, {per_sec:,.0f}/s"

    with click.progressbar(
        length=size, label="pushing", item_show_func=rate, file=sys.stderr
    ) as bar:

        def lines() -> Iterator[bytes]:
            for line in file:
                counted["lines"] += 1
                bar.update(len(line), line)
                yield line

        yield lines()


def _regular_file_size(file: IO[bytes]) -> int:
    try:
        stat = os.fstat(file.fileno())
    except (OSError, ValueError):
        return 0
    return stat.st_size if stat.st_mode & 0o170000 == 0o100000 else 0


# --- registrations, status, unregister


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")


@click.command()
@url_argument
@json_option
@connection_options
def registrations(url: str, as_json: bool, client_factory: ClientFactory) -> None:
    """List a relay's registrations with their backlog and lag.

    \b
    Examples:
      cfylogs registrations http://127.0.0.1:8200
      cfylogs registrations https://manager:8200 --cacert ca.pem --json | jq .
    """
    with failures(), client_factory(url) as client:
        regs = client.registrations()
    if as_json:
        click.echo(json.dumps({"registrations": [asdict(r) for r in regs]}, indent=2))
        return
    click.echo(render.registrations_table(regs, time.time()))


@click.command()
@url_argument
@json_option
@connection_options
def status(url: str, as_json: bool, client_factory: ClientFactory) -> None:
    """Show a relay's health, storage and total backlog; exit 1 if it is not healthy.

    \b
    Examples:
      cfylogs status http://127.0.0.1:8200
      cfylogs status https://manager:8200 --cacert ca.pem --json
    """
    with failures(), client_factory(url) as client:
        health = client.health()
        regs: list[Registration] = client.registrations() if health.ok else []
    if as_json:
        click.echo(json.dumps(render.status_json(health, regs, time.time()), indent=2))
    else:
        click.echo(render.status_table(health, regs, time.time()))
    if not health.ok:
        sys.exit(1)


@click.command()
@url_argument
@click.argument("registration_id", metavar="ID")
@click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="State file of `cfylogs tail` to forget the registration in (default as tail's).",
)
@connection_options
def unregister(
    url: str, registration_id: str, state_path: Path | None, client_factory: ClientFactory
) -> None:
    """Remove registration ID and its backlog from a relay.

    \b
    Examples:
      cfylogs unregister http://127.0.0.1:8200 3f0b8c4e-5c1a-4d0e-9a51-0c7f2f6f7e11
    """
    with failures(), client_factory(url) as client:
        client.unregister(registration_id)
        StateFile(state_path or default_state_path()).forget(url, registration_id)
    click.echo(f"removed registration {registration_id}")


CLIENT_COMMANDS = [tail, push, registrations, status, unregister]
