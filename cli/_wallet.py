"""``mercato wallet`` and ``mercato channel``: the node's money and its payment channels.

Amounts print as lamports with their SOL value, lockups as a date and how far
away; channel ids print as prefixes that every ``channel`` command takes back.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import click

from mercato.node import ControlClient

from ._common import data_dir_option, print_json, resolve
from ._format import LAMPORTS_PER_SOL, lamports, moment, short_id, table
from ._ids import channel_id as expand_channel
from ._ids import peer_id as expand_peer
from ._progress import waiting

LEDGER_TIMEOUT_S = 90.0  # waits on the ledger's confirmation (the API's own cap is 60 s)
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


class Sol(click.ParamType):
    """An amount of SOL (``0.5``), given as lamports."""

    name = "SOL"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        try:
            amount = Decimal(str(value)) * LAMPORTS_PER_SOL
        except InvalidOperation:
            self.fail(f"{value!r} is not an amount of SOL (e.g. 0.5)", param, ctx)
        if not amount.is_finite():
            self.fail(f"{value!r} is not an amount of SOL (e.g. 0.5)", param, ctx)
        if amount <= 0 or amount != amount.to_integral_value() or amount > 10**15:
            self.fail(f"{value} SOL is not a positive whole number of lamports", param, ctx)
        return int(amount)


class Duration(click.ParamType):
    """A duration: ``90s``, ``30m``, ``1h``, ``2d`` (seconds if no unit)."""

    name = "DURATION"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        match = re.fullmatch(r"(\d{1,9})([smhd]?)", str(value).strip())
        if not match:
            self.fail(f"{value!r} is not a duration (e.g. 1h, 30m, 2d)", param, ctx)
        return int(match[1]) * UNITS[match[2] or "s"]


def _tokens(amount: int, decimals: int) -> str:
    """Base units as tokens: ``1500000`` at 6 decimals is ``1.5 tokens``."""
    text = f"{Decimal(amount).scaleb(-decimals):f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text} tokens ({amount} base units)"


@click.group("wallet", invoke_without_command=True)
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def wallet(ctx: click.Context, data_dir: Path | None, as_json: bool) -> None:
    """This node's wallet: its Solana address, balance and ledger, and its SPL
    token balances (the local ledger's test mint, and `[gateway] asset`).

    The wallet is the `[settlement] account` key. On the embedded ledger (the
    default) the money exists on this node only; on a localnet, on that
    localnet only. Both credit an empty wallet at start so that a node can pay
    at once, with 1,000 tokens of their test mint for x402; `airdrop` asks for
    more (and 1,000 more tokens).

    \b
    Example:
      mercato wallet
      mercato wallet address
      mercato wallet airdrop 2
    """
    if ctx.invoked_subcommand is not None:
        return
    info = ControlClient(resolve(data_dir)).wallet()
    if as_json:
        print_json(info)
        return
    click.echo(f"{info['address']}  {lamports(info['balance'])}  on {info['ledger']}")
    for token in info.get("tokens") or []:
        click.echo(f"  {_tokens(token['amount'], token['decimals'])} of mint {token['mint']}")
    held = info.get("held") or {}
    if held.get("due") or held.get("sending"):
        pending = held["due"] + held["sending"]
        click.echo(
            f"holding {lamports(pending)} of royalties for {len(held['recipients'])} creator(s): "
            "forwarded once their accounts exist or the amount reaches the rent-exempt minimum"
        )
    if held.get("paid"):
        click.echo(f"royalties forwarded so far: {lamports(held['paid'])}")


@wallet.command("address")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def wallet_address(data_dir: Path | None, as_json: bool) -> None:
    """Print the wallet's Solana address (base58).

    \b
    Example:
      mercato wallet address
      mercato wallet address --json
    """
    info = ControlClient(resolve(data_dir)).wallet()
    if as_json:
        print_json({"address": info["address"], "ledger": info["ledger"]})
    else:
        click.echo(info["address"])


@wallet.command("balance")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def wallet_balance(data_dir: Path | None, as_json: bool) -> None:
    """Print the wallet's balance on its ledger.

    \b
    Example:
      mercato wallet balance --json
    """
    info = ControlClient(resolve(data_dir)).wallet()
    if as_json:
        print_json({"balance": info["balance"], "ledger": info["ledger"]})
        return
    click.echo(lamports(info["balance"]))


@wallet.command("airdrop")
@click.argument("amount", type=Sol(), default="1")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def wallet_airdrop(amount: int, data_dir: Path | None, as_json: bool) -> None:
    """Ask the ledger's faucet for AMOUNT SOL (default 1).

    Only the embedded ledger and a localnet have a faucet: on a cluster, fund
    the address from another wallet.

    \b
    Example:
      mercato wallet airdrop 2.5
    """
    info = ControlClient(resolve(data_dir), LEDGER_TIMEOUT_S).airdrop(amount)
    if as_json:
        print_json(info)
        return
    click.echo(f"received {lamports(amount)}; balance {lamports(info['balance'])}")


@click.group("channel")
def channel() -> None:
    """Payment channels this node pays on (payer) or is paid on (payee).

    Paid tasks open channels on their own ([settlement] deposit_lamports and
    channel_duration_s) and the daemon closes and refunds them on time; these
    commands do the same by hand.

    \b
    Example:
      mercato channel ls
      mercato channel open 12D3KooW... --deposit 0.5 --duration 4h
      mercato channel close <stake account>
    """


CHANNEL_HEADERS = ("CHANNEL", "ROLE", "PEER", "STATUS", "PAID", "LEFT", "LOCKUP ENDS")
CONFIRM = "waiting for the ledger to confirm"


def _row(c: dict[str, Any]) -> tuple[str, ...]:
    """A channel as a row of `channel ls`: ids cut to prefixes `channel show` takes back."""
    return (
        short_id(c["stake"]), c["role"], short_id(c["peer"]), c["status"],
        lamports(c["paid"]), lamports(c["left"]), moment(c["expires"]),
    )  # fmt: skip


@channel.command("ls")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "-q", "--quiet", is_flag=True, help="Print only the channels' whole ids, one per line."
)
def channel_ls(data_dir: Path | None, as_json: bool, quiet: bool) -> None:
    """List channels: stake account, role, peer, status, paid and left, lockup end.

    CHANNEL and PEER are prefixes: `channel show`, `close` and `refund` take
    them back; `--json` has the whole ids, and `--quiet` only the ids.

    \b
    Example:
      mercato channel ls
      mercato channel close $(mercato channel ls -q | head -n 1)
    """
    if as_json and quiet:
        raise click.UsageError("give --json or --quiet, not both")
    found = ControlClient(resolve(data_dir)).channels()
    if as_json:
        print_json(found)
        return
    if quiet:
        for c in found["channels"]:
            click.echo(c["stake"])
        return
    if not found["channels"]:
        click.echo("no channels yet")
        return
    table(CHANNEL_HEADERS, [_row(c) for c in found["channels"]])


@channel.command("show")
@click.argument("channel_id", metavar="ID")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def channel_show(channel_id: str, data_dir: Path | None, as_json: bool) -> None:
    """Show one channel (ID is its stake account, or its start as `channel ls` prints
    it): terms, amounts owed and used, status.

    \b
    Example:
      mercato channel show 7fJrupaZXvcxYiSzuvc78YUKwk9Vhq6qxMS4JskYED39
      mercato channel show 7fJrupaZXvcx
    """
    client = ControlClient(resolve(data_dir))
    shown = client.channel(expand_channel(client, channel_id))
    if as_json:
        print_json(shown)
        return
    for label, value in (
        ("channel", shown["stake"]),
        ("role", f"{shown['role']} ({shown['status']})"),
        ("peer", shown["peer"]),
        ("payer", shown["payer"]),
        ("payee", shown["payee"]),
        ("deposit", lamports(shown["deposit"])),
        ("paid", lamports(shown["paid"])),
        ("left", lamports(shown["left"])),
        ("lockup ends", moment(shown["expires"])),
    ):
        click.echo(f"{label + ':':<13}{value}")
    for recipient, owed in shown["owed"].items():
        used = shown["settled"].get(recipient, 0)
        click.echo(f"owed {lamports(owed)} to {recipient} (used by tasks: {lamports(used)})")
    click.echo(f"the latest state commits to {shown.get('receipts', 0)} task receipts")


@channel.command("open")
@click.argument("peer")
@click.option("--deposit", type=Sol(), required=True, help="What the channel holds, in SOL.")
@click.option(
    "--duration", type=Duration(), default="24h", show_default=True, help="Its lockup: 1h, 2d…"
)
@click.option("--payee", help="The peer's wallet address (default: the one its agent card names).")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def channel_open(
    peer: str,
    deposit: int,
    duration: int,
    payee: str | None,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Open a channel to PEER (a peer id, or the start of a connected peer's): paid
    tasks to it will use it.

    \b
    Example:
      mercato channel open 12D3KooW... --deposit 0.5 --duration 4h
    """
    client = ControlClient(resolve(data_dir), LEDGER_TIMEOUT_S)
    peer = expand_peer(client, peer)
    with waiting(f"{CONFIRM} the channel's deposit"):
        opened = client.channel_open(peer, deposit, duration, payee)
    if as_json:
        print_json(opened)
        return
    click.echo(
        f"opened {opened['stake']}: {lamports(opened['deposit'])}, "
        f"locked until {moment(opened['expires'])}"
    )


@channel.command("close")
@click.argument("channel_id", metavar="ID")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def channel_close(channel_id: str, data_dir: Path | None, as_json: bool) -> None:
    """Close a channel this node is paid on, now, with the latest state it holds.

    The watcher does this on its own `close_margin_s` before the lockup ends.
    ID is the stake account, or its start as `channel ls` prints it.

    \b
    Example:
      mercato channel close 7fJrupaZXvcxYiSzuvc78YUKwk9Vhq6qxMS4JskYED39
    """
    client = ControlClient(resolve(data_dir), LEDGER_TIMEOUT_S)
    stake = expand_channel(client, channel_id)
    with waiting(f"{CONFIRM} the close"):
        closed = client.channel_close(stake)
    if as_json:
        print_json(closed)
        return
    click.echo(f"closed {closed['stake']}: paid {lamports(closed['paid'])} ({closed['signature']})")


@channel.command("refund")
@click.argument("channel_id", metavar="ID")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def channel_refund(channel_id: str, data_dir: Path | None, as_json: bool) -> None:
    """Take back what a channel this node paid on still holds, once its lockup ended.

    The watcher does this on its own after the lockup. ID is the stake
    account, or its start as `channel ls` prints it.

    \b
    Example:
      mercato channel refund 7fJrupaZXvcxYiSzuvc78YUKwk9Vhq6qxMS4JskYED39
    """
    client = ControlClient(resolve(data_dir), LEDGER_TIMEOUT_S)
    stake = expand_channel(client, channel_id)
    with waiting(f"{CONFIRM} the refund"):
        done = client.channel_refund(stake)
    if as_json:
        print_json(done)
        return
    click.echo(f"refunded {done['stake']} ({done['signature'] or 'nothing was left'})")
