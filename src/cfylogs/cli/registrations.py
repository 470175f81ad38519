"""`cfylogs registrations | status | unregister URL`: look after a relay's consumers."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import click

from cfylogs.cli.options import (
    EXIT_FAILURE,
    ClientFactory,
    connection_options,
    default_state_path,
    failures,
    json_option,
    url_argument,
)
from cfylogs.client import Registration, render
from cfylogs.client.state import StateFile


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
        sys.exit(EXIT_FAILURE)


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
