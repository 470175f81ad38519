"""`cfylogs tail URL`: print what a relay receives; acknowledge only what was written."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

import click

from cfylogs.cli.options import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    ClientFactory,
    connection_options,
    default_state_path,
    failures,
    log_warnings_to_stderr,
    url_argument,
)
from cfylogs.client import Batch, Consumer, ConsumerOptions, render
from cfylogs.client.state import StateFile


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
    log_warnings_to_stderr()
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
                sys.exit(EXIT_FAILURE)


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
