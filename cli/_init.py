from __future__ import annotations

from pathlib import Path

import click

from mercato.node import init_data_dir

from ._common import data_dir_option, resolve


@click.command()
@data_dir_option
def init(data_dir: Path | None) -> None:
    """Create a data dir: config, API token, node key, a 'default' account key, store.

    Running it again on an initialized data dir changes nothing.

    \b
    Example:
      mercato init --data-dir ~/mercato-test
    """
    datadir = resolve(data_dir)
    result = init_data_dir(datadir)
    if result.created:
        click.echo(f"initialized data dir {result.root}")
    else:
        click.echo(f"data dir {result.root} is already initialized; nothing changed")
    click.echo(f"  peer id:         {result.peer_id}")
    if result.account_address:
        click.echo(f"  default account: {result.account_address}")
