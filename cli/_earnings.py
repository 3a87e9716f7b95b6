"""``mercato earnings``: what this node earned serving others, per listing and channel."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import click

from mercato.node import ControlClient

from ._common import data_dir_option, print_json, resolve
from ._format import lamports, short_id, short_ref, table, when

LISTING_HEADERS = ("LISTING", "TASKS", "OK", "REVENUE", "ROYALTIES")
CHANNEL_HEADERS = ("CHANNEL", "PAYER", "STATUS", "PAID", "EARNED", "CHANGED")


def _since(text: str) -> float:
    """A date (``2026-11-01``, local midnight) or a local date and time, as unix seconds."""
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError as exc:
        raise click.BadParameter(
            f"{text!r} is not a date: give YYYY-MM-DD or YYYY-MM-DDTHH:MM", param_hint="--since"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.astimezone()  # a person's date is in their own time zone
    ts = moment.timestamp()
    if ts > datetime.datetime.now().timestamp():
        raise click.BadParameter(f"{text} is in the future", param_hint="--since")
    return ts


@click.command("earnings")
@data_dir_option
@click.option(
    "--days",
    type=click.IntRange(1, 3660),
    default=None,
    help="Count the last N days [default: 30].",
)
@click.option("--since", "since_text", default=None, help="Count from this date (YYYY-MM-DD).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def earnings(
    data_dir: Path | None, days: int | None, since_text: str | None, as_json: bool
) -> None:
    """Show what this node earned serving others, per listing and per channel.

    Per listing served (as a provider, and as the creator when the listing is
    this node's): the tasks and model calls, this node's REVENUE and the
    creators' ROYALTIES in what users paid, from the receipts in the task log.
    Then the channels this node is paid on, open or closed in the period: what
    each state PAID in all and EARNED this node (a closed channel's EARNED is what
    the ledger paid it). Royalties from tasks that other providers served reach a
    creator's wallet directly: see `mercato wallet`.

    \b
    Example:
      mercato earnings
      mercato earnings --days 7
      mercato earnings --since 2026-11-01 --json
    """
    if days is not None and since_text is not None:
        raise click.UsageError("give --days or --since, not both")
    since = _since(since_text) if since_text is not None else None
    client = ControlClient(resolve(data_dir))
    found = client.earnings(days if since is None else None, since)
    if as_json:
        print_json(found)
        return
    _print(found)


def _print(found: dict[str, Any]) -> None:
    click.echo(f"since {when(found['since'])} ({found['days']:g} days), wallet {found['wallet']}")
    if not found["listings"] and not found["channels"]:
        click.echo("nothing served and no channel paid in this period")
        return
    totals = found["totals"]
    if found["listings"]:
        click.echo()
        rows = [
            (
                short_ref(r["agent"]) + (" (yours)" if r["creator"] else ""),
                r["tasks"], r["tasks_ok"], lamports(r["revenue"]), lamports(r["royalties"]),
            )
            for r in found["listings"]
        ]  # fmt: skip
        rows.append(
            ("total", totals["tasks"], totals["tasks_ok"], lamports(totals["revenue"]),
             lamports(totals["royalties"]))
        )  # fmt: skip
        table(LISTING_HEADERS, rows)
    if found["channels"]:
        click.echo()
        table(
            CHANNEL_HEADERS,
            [
                (short_id(c["stake"]), short_id(c["peer"]), c["status"], lamports(c["paid"]),
                 lamports(c["earned"]), when(c["updated"]))
                for c in found["channels"]
            ],
        )  # fmt: skip
        click.echo(
            f"\nclosed channels paid this node {lamports(totals['closed_earned'])}; "
            f"open ones pay it {lamports(totals['open_earned'])} so far"
        )
