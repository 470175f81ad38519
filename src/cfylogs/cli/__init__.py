"""The `cfylogs` command: parse, build the settings, call. Exit 0 ok, 1 failure, 2 usage."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cfylogs import __version__
from cfylogs.errors import ConfigError

if TYPE_CHECKING:
    from cfylogs.cli.legacy import LegacyHome
    from cfylogs.config import Settings

log = logging.getLogger("cfylogs")

EXIT_FAILURE = 1
EXIT_USAGE = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cfylogs")
def main() -> None:
    """cfylogs: a durable log relay between Logstash and Alien4Cloud orchestrators."""


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Config file (default: ./config/alien4cloud-cfy-logs-config.yml, then ./).",
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default=None)
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None)
def serve(config_path: Path | None, log_level: str | None, log_format: str | None) -> None:
    """Run the relay in the foreground until SIGTERM or SIGINT.

    \b
    Examples:
      cfylogs serve
      cfylogs serve --config /etc/cfylogs/alien4cloud-cfy-logs-config.yml
      CFYLOGS_SERVER_PORT=9200 cfylogs serve --log-format json
    """
    from cfylogs.http.server import serve as run_server
    from cfylogs.logs import setup_logging

    setup_logging(log_level or "info", log_format or "text")
    try:
        from cfylogs.config import load_settings

        settings = load_settings(config_path)
    except ConfigError as exc:
        log.error("%s", exc)
        sys.exit(EXIT_USAGE)
    setup_logging(log_level or settings.log_level, log_format or settings.log_format)
    log.info("cfylogs %s starting (settings from %s)", __version__, settings.source)
    try:
        _run(run_server(settings))
    except ConfigError as exc:
        log.error("%s", exc)
        sys.exit(EXIT_USAGE)
    except OSError as exc:
        log.error("%s", exc)
        sys.exit(EXIT_FAILURE)


@main.command()
@click.argument(
    "path",
    required=False,
    type=click.Path(path_type=Path),
    default=Path("alien4cloud-cfy-logs-config.yml"),
)
@click.option("--force", is_flag=True, help="Overwrite the file if it exists.")
def init(path: Path, force: bool) -> None:
    """Write a commented default config file at PATH (a file, or a directory to put it in).

    \b
    Examples:
      cfylogs init
      cfylogs init /etc/cfylogs/
      cfylogs init ./config/alien4cloud-cfy-logs-config.yml --force
    """
    from cfylogs.cli.configfile import write_default_config

    try:
        written = write_default_config(path, force)
    except FileExistsError as exc:
        click.echo(f"{exc.args[0]} exists; use --force to overwrite it", err=True)
        sys.exit(EXIT_FAILURE)
    except OSError as exc:
        click.echo(f"cannot write {path}: {exc.strerror}", err=True)
        sys.exit(EXIT_FAILURE)
    click.echo(f"wrote {written}")


@main.command("import-legacy")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Config file of the relay whose store receives the import (as for serve).",
)
@click.option("--dry-run", is_flag=True, help="Print what would be imported; change nothing.")
def import_legacy(directory: Path, config_path: Path | None, dry_run: bool) -> None:
    """Adopt the registrations and pending batches of the Java server's home DIRECTORY.

    Run it with both servers stopped: it works on the store offline. Each
    registration keeps its id and receives its unacknowledged batches first,
    under their ids. Running it again imports nothing twice. Exit 0: all
    imported; 1: some batch files could not be read (listed; the rest was
    imported); 2: bad config.

    \b
    Examples:
      cfylogs import-legacy ~/.a4ccfylogs --dry-run
      cfylogs import-legacy /opt/cfy-logs/home --config /etc/cfylogs/alien4cloud-cfy-logs-config.yml
    """
    from cfylogs.cli.legacy import LegacyError, read_legacy_home
    from cfylogs.config import load_settings
    from cfylogs.errors import StoreInUse
    from cfylogs.logs import setup_logging

    setup_logging("warning")
    try:
        settings = load_settings(config_path)
        home = read_legacy_home(directory)
        problems = asyncio.run(_import_legacy(settings, home, dry_run))
    except LegacyError as exc:
        click.echo(f"nothing imported: {exc}", err=True)
        sys.exit(EXIT_FAILURE)
    except StoreInUse as exc:
        click.echo(
            f"nothing imported: {exc}.\nimport-legacy works on the store offline: stop the "
            "cfylogs server (e.g. `systemctl stop cfylogs`), import, then start it again.",
            err=True,
        )
        sys.exit(EXIT_FAILURE)
    except ConfigError as exc:
        click.echo(f"nothing imported: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    sys.exit(EXIT_FAILURE if problems else 0)


async def _import_legacy(settings: Settings, home: LegacyHome, dry_run: bool) -> int:
    """Open the store (unless a dry run has none to look at), import, report; -> problems."""
    import time

    from cfylogs.cli.legacy import import_home, summary
    from cfylogs.storage import create_storage
    from cfylogs.storage.sqlite import DB_FILE

    store = create_storage(settings)
    # A dry run must not create the embedded store just to find it empty.
    db = settings.home_directory / DB_FILE
    empty = settings.storage_backend == "sqlite" and not db.exists()
    opened = None if dry_run and empty else store
    if opened is not None:
        await opened.open()
    try:
        result = await import_home(home, opened, time.time(), click.echo, dry_run)
    finally:
        if opened is not None:
            await opened.close()
    for line in summary(home, result, dry_run):
        click.echo(line, err=line.startswith("NOT IMPORTED"))
    return len(home.problems)


def _run(coro: object) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(coro)  # type: ignore[arg-type]
        return
    uvloop.run(coro)  # type: ignore[arg-type]


def _add_client_commands() -> None:
    from cfylogs.cli.commands import CLIENT_COMMANDS
    from cfylogs.cli.dead_letters import dead_letters

    for command in [*CLIENT_COMMANDS, dead_letters]:
        main.add_command(command)


_add_client_commands()
