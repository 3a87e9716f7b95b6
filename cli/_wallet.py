from __future__ import annotations

from pathlib import Path

import click

from node import ControlClient

from ._common import data_dir_option, print_json, resolve

LAMPORTS_PER_SOL = 1_000_000_000


@click.command("wallet")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def wallet(data_dir: Path | None, as_json: bool) -> None:
    """Show this node's wallet: its Solana address, balance and ledger.

    The wallet is the `[settlement] account` key. On the embedded ledger (the
    default) the money exists on this node only: an empty wallet is credited
    at start so that the node can pay at once.

    \b
    Example:
      mercato wallet
    """
    info = ControlClient(resolve(data_dir)).wallet()
    if as_json:
        print_json(info)
        return
    sol = info["balance"] / LAMPORTS_PER_SOL
    click.echo(f"{info['address']}  {info['balance']} lamports ({sol:g} SOL)  on {info['ledger']}")


@click.group("channels")
def channels() -> None:
    """Payment channels this node pays on (payer) or is paid on (payee).

    \b
    Example:
      mercato channels ls
    """


@channels.command("ls")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def channels_ls(data_dir: Path | None, as_json: bool) -> None:
    """List channels: stake account, role, peer, status, paid and left, lockup end.

    \b
    Example:
      mercato channels ls --json
    """
    found = ControlClient(resolve(data_dir)).channels()
    if as_json:
        print_json(found)
        return
    if not found["channels"]:
        click.echo("no channels yet")
    for c in found["channels"]:
        click.echo(
            f"{c['stake']}  {c['role']:<5}  {c['peer'][:20]}…  {c['status']:<8}  "
            f"paid {c['paid']}  left {c['left']}  until {c['expires']}"
        )
