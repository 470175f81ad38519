"""`cfylogs push URL [FILE]`: send events from a file or stdin, in order, in batches."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO

import click

from cfylogs.cli.options import (
    ClientFactory,
    connection_options,
    describe,
    failures,
    log_warnings_to_stderr,
    url_argument,
)
from cfylogs.client import InputError, PushFailed, batched, iter_events, push_batches

#: Inputs at least this large get a progress bar (on a terminal).
PROGRESS_MIN_BYTES = 1024**2


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
    log_warnings_to_stderr()
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
