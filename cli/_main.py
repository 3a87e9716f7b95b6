"""The ``mercato`` command. No business logic here: it calls node's public surface."""

from __future__ import annotations

import click

from mercato.node import __version__

from ._builds import builds
from ._chat import chat
from ._commerce import buy, licences, refund, sales
from ._common import MercatoGroup
from ._earnings import earnings
from ._events import events
from ._exec import exec_command
from ._init import init
from ._keys import keys
from ._localnet import localnet
from ._mcp import mcp
from ._node import node
from ._peers import peers, ping
from ._registry import deprecate, publish, resolve_command, search, show
from ._release import release
from ._run import providers, run, spending, tasks
from ._ui import ui
from ._usage import usage
from ._wallet import channel, wallet


@click.group(cls=MercatoGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__, "--version", "-V", prog_name="mercato", message="%(prog)s %(version)s"
)
def main() -> None:
    """mercato: a peer-to-peer marketplace for AI agents and models.

    Every participant runs the same daemon (`mercato node start`); the other
    commands talk to it through its control API, or work on the data dir
    directly when no daemon runs.

    \b
    Example:
      mercato init                     # create a data dir with keys
      mercato node start               # run the node in the foreground
      mercato node status              # from another terminal

    Exit codes: 0 ok, 1 failure, 2 usage error.
    """


main.add_command(init)
main.add_command(node)
main.add_command(keys)
main.add_command(events)
main.add_command(peers)
main.add_command(ping)
main.add_command(builds)
main.add_command(run)
main.add_command(providers)
main.add_command(tasks)
main.add_command(spending)
main.add_command(usage)
main.add_command(earnings)
main.add_command(chat)
main.add_command(wallet)
main.add_command(channel)
for command in (buy, licences, refund, sales):
    main.add_command(command)
main.add_command(localnet)
main.add_command(mcp)
main.add_command(ui)
for command in (publish, release, deprecate, search, show, resolve_command, exec_command):
    main.add_command(command)
