from __future__ import annotations

from pathlib import Path

import click

from mercato.node import ControlClient

from ._common import data_dir_option, print_json, resolve


@click.command()
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def peers(data_dir: Path | None, as_json: bool) -> None:
    """List the peers the running node is connected to.

    \b
    Example:
      mercato peers
      mercato peers --json | jq '.peers[].peer_id'
    """
    found = ControlClient(resolve(data_dir)).peers()
    if as_json:
        print_json(found)
        return
    if not found["peers"]:
        click.echo("no peers connected")
    for peer in found["peers"]:
        click.echo(peer["peer_id"])
        for addr in peer["addrs"][:4]:
            click.echo(f"    {addr}")
    if found["banned"]:
        click.echo(f"banned: {', '.join(found['banned'])}")


@click.command()
@data_dir_option
@click.argument("peer")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ping(data_dir: Path | None, peer: str, as_json: bool) -> None:
    """Ping PEER (a peer id, or a multiaddr ending in /p2p/PEER_ID to dial first).

    \b
    Example:
      mercato ping 12D3KooWLcbC36iN2qgzUZ7fXVs4mC99Raj4dYhxFpvvZ22ccqFG
      mercato ping /ip4/192.0.2.10/tcp/4001/p2p/12D3KooW...
    """
    result = ControlClient(resolve(data_dir)).ping(peer)
    if as_json:
        print_json(result)
        return
    rtts = ", ".join(f"{r:.2f} ms" for r in result["rtt_ms"])
    click.echo(f"{result['peer_id']}: {rtts}")
