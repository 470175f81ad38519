"""`cfylogs serve` and `cfylogs init`: run the relay; write its default config file."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cfylogs import __version__
from cfylogs.cli.options import EXIT_FAILURE, EXIT_USAGE
from cfylogs.errors import ConfigError

if TYPE_CHECKING:
    from cfylogs.config import Settings

log = logging.getLogger("cfylogs")


@click.command()
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
    from cfylogs.config import load_settings
    from cfylogs.http.server import serve as run_server
    from cfylogs.logs import setup_logging

    setup_logging(log_level or "info", log_format or "text")
    try:
        settings = load_settings(config_path)
    except ConfigError as exc:
        log.error("%s", exc)
        sys.exit(EXIT_USAGE)
    setup_logging(log_level or settings.log_level, log_format or settings.log_format)
    log.info("cfylogs %s starting (settings from %s)", __version__, settings.source)
    _hint_legacy_home(settings)
    try:
        _run(run_server(settings))
    except ConfigError as exc:
        log.error("%s", exc)
        sys.exit(EXIT_USAGE)
    except OSError as exc:
        log.error("%s", exc)
        sys.exit(EXIT_FAILURE)


def _hint_legacy_home(settings: Settings) -> None:
    """The Java server's home is the default home_directory too: say what is not served."""
    from cfylogs.cli.legacy import is_legacy_home
    from cfylogs.storage import embedded_store_exists

    home = settings.home_directory
    if (
        settings.storage_backend == "sqlite"
        and is_legacy_home(home)
        and not embedded_store_exists(home)
    ):
        log.warning(
            "%s holds the Java alien4cloud-cfy-logs state: its registrations and pending "
            "batches are not served until imported; stop cfylogs and run "
            "`cfylogs import-legacy %s` (see docs/MIGRATION.md)",
            home,
            home,
        )


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(coro)
        return
    uvloop.run(coro)


@click.command()
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
