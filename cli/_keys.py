"""``mercato keys``: the node key and the account keys of a data dir."""

from __future__ import annotations

from pathlib import Path

import click

from mercato.node import KeyStoreError, check_account_name, open_control

from ._common import data_dir_option, print_json, resolve
from ._format import table


@click.group()
def keys() -> None:
    """List, create and show keys: the node key and account keys.

    An account key's address is at once its publisher id in the registry and
    its Solana wallet. Key files are Solana keypair files, mode 0600.

    \b
    Example:
      mercato keys list
      mercato keys new alice
      mercato keys show alice
    """


def _print_key(key: dict) -> None:
    click.echo(f"name:       {key['name']}")
    click.echo(f"kind:       {key['kind']}")
    click.echo(f"address:    {key['address']}")
    if key.get("peer_id"):
        click.echo(f"peer id:    {key['peer_id']}")
    click.echo(f"public key: {key['public_key']}")
    click.echo(f"file:       {key['path']}")


@keys.command("list")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_keys(data_dir: Path | None, as_json: bool) -> None:
    """List the node key and every account key (public parts only).

    \b
    Example:
      mercato keys list --json
    """
    with open_control(resolve(data_dir)) as control:
        found = control.keys_list()
    if as_json:
        print_json(found)
        return
    rows = [(key["name"], key["kind"], key["peer_id"] or key["address"]) for key in found]
    table(("NAME", "KIND", "ADDRESS / PEER ID"), rows)


def _account_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return check_account_name(value)
    except KeyStoreError as exc:
        raise click.BadParameter(str(exc)) from exc


@keys.command("new")
@data_dir_option
@click.argument("name", callback=_account_name)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def new_key(data_dir: Path | None, name: str, as_json: bool) -> None:
    """Create a new account key NAME (lowercase letters, digits, '-', '_').

    \b
    Example:
      mercato keys new alice
    """
    with open_control(resolve(data_dir)) as control:
        key = control.keys_new(name)
    if as_json:
        print_json(key)
    else:
        click.echo(f"created account key {key['name']}: {key['address']}")


@keys.command("show")
@data_dir_option
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_key(data_dir: Path | None, name: str, as_json: bool) -> None:
    """Show one key: 'node' or an account name. Never shows the secret.

    \b
    Example:
      mercato keys show node
    """
    with open_control(resolve(data_dir)) as control:
        key = control.keys_show(name)
    if as_json:
        print_json(key)
    else:
        _print_key(key)
