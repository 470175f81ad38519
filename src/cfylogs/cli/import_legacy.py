"""`cfylogs import-legacy DIRECTORY`: adopt the Java server's state (see cli/legacy.py)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from cfylogs.cli.options import EXIT_FAILURE, EXIT_USAGE
from cfylogs.errors import ConfigError


@click.command("import-legacy")
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
    imported; 1: some files could not be imported (listed on stderr; the
    rest was imported); 2: bad config.

    \b
    Examples:
      cfylogs import-legacy ~/.a4ccfylogs --dry-run
      cfylogs import-legacy /opt/cfy-logs/home --config /etc/cfylogs/alien4cloud-cfy-logs-config.yml
    """
    from cfylogs.cli.legacy import LegacyError, problem_lines, read_legacy_home, run_import, summary
    from cfylogs.config import load_settings
    from cfylogs.errors import StoreInUse
    from cfylogs.logs import setup_logging

    setup_logging("warning")
    try:
        settings = load_settings(config_path)
        home = read_legacy_home(directory)
        result = asyncio.run(run_import(settings, home, dry_run, click.echo))
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
    for line in problem_lines(home):
        click.echo(line, err=True)
    for line in summary(home, result, dry_run):
        click.echo(line)
    sys.exit(EXIT_FAILURE if home.problems else 0)
