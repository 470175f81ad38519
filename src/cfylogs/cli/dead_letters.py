"""`cfylogs dead-letters list|replay|purge URL`: what `ingest.accept` kept from consumers.

Thin, like the other client commands: one `Client` call each.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import asdict

import click

from cfylogs.cli.options import ClientFactory, connection_options, failures, url_argument
from cfylogs.client import DeadLetter

EVENT_WIDTH = 80


@click.group("dead-letters")
def dead_letters() -> None:
    """Events that were not Cloudify logs or events (ingest.accept: cloudify)."""


def _selection(ids: tuple[int, ...], all_: bool) -> list[int] | None:
    if bool(ids) == all_:
        raise click.UsageError("name the dead letters (IDS...) or pass --all, not both")
    return None if all_ else list(ids)


ids_argument = click.argument("ids", nargs=-1, type=int)
all_option = click.option("--all", "all_", is_flag=True, help="Every dead letter.")


@dead_letters.command("list")
@url_argument
@click.option("--after", type=click.IntRange(min=0), default=0, help="Start after this id.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the page as JSON, for scripts.")
@connection_options
def list_(url: str, after: int, limit: int, as_json: bool, client_factory: ClientFactory) -> None:
    """List dead letters with the reason each was kept from consumers.

    \b
    Examples:
      cfylogs dead-letters list http://127.0.0.1:8200
      cfylogs dead-letters list http://127.0.0.1:8200 --after 500 --json | jq .
    """
    with failures(), client_factory(url) as client:
        page = client.dead_letters(after, limit)
    if as_json:
        click.echo(json.dumps(asdict(page), indent=2))
        return
    click.echo(f"{page.total} dead letter(s)")
    for letter in page.dead_letters:
        click.echo(_line(letter))
    if page.next_after is not None:
        click.echo(f"more: --after {page.next_after}")


def _line(letter: DeadLetter) -> str:
    when = datetime.datetime.fromtimestamp(letter.received, datetime.UTC)
    event = json.dumps(letter.event, separators=(",", ":"))
    if len(event) > EVENT_WIDTH:
        event = event[: EVENT_WIDTH - 3] + "..."
    return f"{letter.id:>8}  {when:%Y-%m-%dT%H:%M:%SZ}  {letter.reason}\n          {event}"


@dead_letters.command()
@url_argument
@ids_argument
@all_option
@connection_options
def replay(url: str, ids: tuple[int, ...], all_: bool, client_factory: ClientFactory) -> None:
    """Send dead letters IDS (or --all) to the consumers, as if ingested now.

    \b
    Examples:
      cfylogs dead-letters replay http://127.0.0.1:8200 12 13
      cfylogs dead-letters replay http://127.0.0.1:8200 --all
    """
    selection = _selection(ids, all_)
    with failures(), client_factory(url) as client:
        answer = client.replay_dead_letters(selection)
    click.echo(f"replayed {answer.replayed} dead letter(s)")
    if answer.kept_no_registration:
        click.echo(
            f"kept {answer.kept_no_registration}: no registration exists to receive them",
            err=True,
        )


@dead_letters.command()
@url_argument
@ids_argument
@all_option
@connection_options
def purge(url: str, ids: tuple[int, ...], all_: bool, client_factory: ClientFactory) -> None:
    """Delete dead letters IDS (or --all) for good.

    \b
    Examples:
      cfylogs dead-letters purge http://127.0.0.1:8200 12 13
      cfylogs dead-letters purge http://127.0.0.1:8200 --all
    """
    selection = _selection(ids, all_)
    with failures(), client_factory(url) as client:
        purged = client.purge_dead_letters(selection)
    click.echo(f"purged {purged} dead letter(s)")
