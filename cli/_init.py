"""``mercato init``: create a data dir."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from mercato.node import init_data_dir

from ._common import data_dir_option, print_json, resolve


@click.command()
@data_dir_option
@click.option(
    "--json", "as_json", is_flag=True, help="Print JSON (created, root, peer_id, account_address)."
)
def init(data_dir: Path | None, as_json: bool) -> None:
    """Create a data dir: config, API token, node key, a 'default' account key, store.

    Running it again on an initialized data dir changes nothing.

    \b
    Example:
      mercato init --data-dir ~/mercato-test
      mercato init --json
    """
    datadir = resolve(data_dir)
    result = init_data_dir(datadir)
    if as_json:
        print_json(dataclasses.asdict(result))
        return
    if result.created:
        click.echo(f"initialized data dir {result.root}")
    else:
        click.echo(f"data dir {result.root} is already initialized; nothing changed")
    click.echo(f"  peer id:         {result.peer_id}")
    if result.account_address:
        click.echo(f"  default account: {result.account_address}")
