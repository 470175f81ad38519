"""The `cfylogs` command: parse, build the settings, call. Exit 0 ok, 1 failure, 2 usage."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click

from cfylogs import __version__
from cfylogs.errors import ConfigError

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


def _run(coro: object) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(coro)  # type: ignore[arg-type]
        return
    uvloop.run(coro)  # type: ignore[arg-type]


def _add_client_commands() -> None:
    from cfylogs.commands import CLIENT_COMMANDS
    from cfylogs.dead_letter_commands import dead_letters

    for command in [*CLIENT_COMMANDS, dead_letters]:
        main.add_command(command)


_add_client_commands()
