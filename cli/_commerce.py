"""Licences and subscriptions: ``buy``, ``licences``, ``refund`` and ``sales``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mercato.node import ControlClient

from ._common import data_dir_option, print_json, resolve
from ._format import moment, short_ref, sol, table, when
from ._ids import licence_mint, listing_ref
from ._progress import waiting
from ._wallet import LEDGER_TIMEOUT_S

__all__ = ["buy", "date", "licences", "refund", "sales", "short", "sol", "table"]

SALE_TIMEOUT_S = LEDGER_TIMEOUT_S + 30.0  # finding the creator's node, then the ledger


def date(ts: float, never: str = "never") -> str:
    """Unix seconds as local date and time; ``never`` for 0 (kept for older callers)."""
    return when(ts) if ts else never


def short(agent: str) -> str:
    """``8Co4tt4s/wordcount``: a listing as `mercato search` shows it, accepted back."""
    return short_ref(agent)


def _refunds(licence: dict[str, Any]) -> str:
    if licence["refunded"]:
        return "refunded"
    return moment(licence["refund_until"], never="none")


@click.command("buy")
@click.argument("agent", metavar="[PUBLISHER/]NAME")
@click.option("--plan", required=True, metavar="NAME", help="The plan (`mercato show` lists them).")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def buy(agent: str, plan: str, data_dir: Path | None, as_json: bool) -> None:
    """Buy a licence or subscription of a listing from its creator's node.

    The creator's node must be online: it co-signs the purchase, which pays the
    plan's price from this node's wallet and gives it a licence token on the
    ledger. Runs of the listing then use it on their own. A subscription
    bought again extends the one held. The listing may be NAME alone when one
    listing has that name, or PREFIX/NAME as `mercato search` prints it.

    \b
    Example:
      mercato show 8Co4tt4sbELaV8uRcbz31ojp8QdazK5MxczX8j1d5EoB/wordcount
      mercato buy 8Co4tt4sbELaV8uRcbz31ojp8QdazK5MxczX8j1d5EoB/wordcount --plan pro
      mercato buy 8Co4tt4s/wordcount --plan pro
    """
    client = ControlClient(resolve(data_dir), SALE_TIMEOUT_S)
    agent = listing_ref(client, agent)
    # The command names the plan: the human at the terminal has confirmed it.
    with waiting(f"buying {plan} of {short_ref(agent)} from its creator's node"):
        bought = client.buy(agent, plan, approved=True)
    if as_json:
        print_json(bought)
        return
    click.echo(
        f"bought {bought['kind']} {bought['plan']} of {bought['agent']} for {sol(bought['price'])}"
    )
    click.echo(f"  licence    {bought['mint']}")
    click.echo(f"  covers     {bought['versions']}")
    click.echo(f"  expires    {moment(bought['expires'])}")
    refunds = f"until {moment(bought['refund_until'])}" if bought["refund_until"] else "none"
    click.echo(f"  refunds    {refunds}")


@click.command("licences")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def licences(data_dir: Path | None, as_json: bool) -> None:
    """List the licences and subscriptions this node bought, newest first.

    STATE is active, expired or refunded; EXPIRES is "never" for a licence;
    REFUNDS says until when `mercato refund` can take it back.

    \b
    Example:
      mercato licences
      mercato licences --json
    """
    answer = ControlClient(resolve(data_dir)).licences()
    if as_json:
        print_json(answer)
        return
    found = answer["licences"]
    if not found:
        click.echo("no licences yet: `mercato buy PUBLISHER/NAME --plan NAME` buys one")
        return
    rows = [
        (
            short(x["agent"]), x["plan"], x["kind"], x["versions"], x["state"],
            moment(x["expires"]), _refunds(x), sol(x["price"]), x["mint"],
        )
        for x in found
    ]  # fmt: skip
    headers = (
        "LISTING",
        "PLAN",
        "KIND",
        "VERSIONS",
        "STATE",
        "EXPIRES",
        "REFUNDS",
        "PRICE",
        "MINT",
    )
    table(headers, rows)


@click.command("refund")
@click.argument("mint")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def refund(mint: str, data_dir: Path | None, as_json: bool) -> None:
    """Ask the creator's node to refund the licence MINT, within its refund window.

    The creator's node pays the price back to this wallet and burns the
    licence token; it must be online. `mercato licences` shows each licence's
    mint and until when it can be refunded; MINT may be the start of one.

    \b
    Example:
      mercato refund 7fJrupaZXvcxYiSzuvc78YUKwk9Vhq6qxMS4JskYED39
      mercato refund 7fJrupaZ
    """
    client = ControlClient(resolve(data_dir), SALE_TIMEOUT_S)
    mint = licence_mint(client, mint)
    with waiting("waiting for the creator's node and the ledger"):
        done = client.refund(mint)
    if as_json:
        print_json(done)
        return
    click.echo(
        f"refunded {done['plan']} of {done['agent']}: {sol(done['price'])} back to this wallet "
        f"({done['refunded']})"
    )


@click.command("sales")
@data_dir_option
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=20,
    show_default=True,
    help="Recent sales shown.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (every sale).")
def sales(data_dir: Path | None, limit: int, as_json: bool) -> None:
    """Show what this node's creators sold: totals per plan, then recent sales.

    EARNED counts what the sales paid, refunds deducted.

    \b
    Example:
      mercato sales
      mercato sales --limit 100
      mercato sales --json
    """
    found = ControlClient(resolve(data_dir)).sales()
    if as_json:
        print_json(found)
        return
    if not found["totals"]:
        click.echo("no sales yet: listings sell licences through their [plans.NAME] tables")
        return
    totals = [
        (short(t["agent"]), t["plan"], str(t["sales"]), str(t["refunds"]), sol(t["lamports"]))
        for t in found["totals"]
    ]
    table(("LISTING", "PLAN", "SALES", "REFUNDS", "EARNED"), totals)
    click.echo()
    recent = [
        (
            when(s["time"]), short(s["agent"]), s["plan"], sol(s["price"]), s["state"],
            s["party"], s["mint"],
        )
        for s in found["sales"][:limit]
    ]  # fmt: skip
    table(("SOLD", "LISTING", "PLAN", "PRICE", "STATE", "BUYER", "MINT"), recent)
    if len(found["sales"]) > limit:
        click.echo(f"({len(found['sales']) - limit} older sales: --limit or --json shows them)")
