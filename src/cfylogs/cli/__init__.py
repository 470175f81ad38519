"""The `cfylogs` command: parse, build the settings, call. Exit 0 ok, 1 failure, 2 usage.

One module per command family; `main` is the group they are added to.
"""

from __future__ import annotations

import click

from cfylogs import __version__
from cfylogs.cli.dead_letters import dead_letters
from cfylogs.cli.import_legacy import import_legacy
from cfylogs.cli.push import push
from cfylogs.cli.registrations import registrations, status, unregister
from cfylogs.cli.serve import init, serve
from cfylogs.cli.tail import tail

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cfylogs")
def main() -> None:
    """cfylogs: a durable log relay between Logstash and Alien4Cloud orchestrators."""


_COMMANDS = [serve, init, import_legacy, tail, push, registrations, status, unregister]
for _command in [*_COMMANDS, dead_letters]:
    main.add_command(_command)
