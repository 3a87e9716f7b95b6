"""``mercato peers`` and ``mercato ping``: the peers the running node is connected to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mercato.node import ControlClient

from ._common import data_dir_option, print_json, resolve
from ._format import table
from ._ids import peer_id


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
    else:
        table(("PEER", "ADDRESS"), [_row(peer) for peer in found["peers"]])
    if found["banned"]:
        click.echo(f"banned: {', '.join(found['banned'])}")


def _row(peer: dict[str, Any]) -> tuple[str, str]:
    """A peer's whole id (to copy) and the first address it is known at."""
    addrs = peer["addrs"]
    more = f" (+{len(addrs) - 1} more: --json)" if len(addrs) > 1 else ""
    return peer["peer_id"], (addrs[0] if addrs else "-") + more


@click.command()
@data_dir_option
@click.argument("peer")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ping(data_dir: Path | None, peer: str, as_json: bool) -> None:
    """Ping PEER (a peer id, the start of a connected peer's id, or a multiaddr
    ending in /p2p/PEER_ID to dial first).

    \b
    Example:
      mercato ping 12D3KooWLcbC36iN2qgzUZ7fXVs4mC99Raj4dYhxFpvvZ22ccqFG
      mercato ping 12D3KooWLcbC
      mercato ping /ip4/192.0.2.10/tcp/4001/p2p/12D3KooW...
    """
    client = ControlClient(resolve(data_dir))
    result = client.ping(peer_id(client, peer))
    if as_json:
        print_json(result)
        return
    rtts = ", ".join(f"{r:.2f} ms" for r in result["rtt_ms"])
    click.echo(f"{result['peer_id']}: {rtts}")
