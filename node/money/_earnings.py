"""What this node earned as a provider (and as a creator of what it served).

Per listing, from the tasks and model calls it served (the task log's receipts):
how many, what users paid in all (``gross``), this node's part (``revenue``)
and the creators' royalties in it (``royalties``: paid to them at the close, or
held and forwarded by this node). The split is the one a payment makes
(`task_amounts`): the listing's royalty, none when this node is the creator
(all of it is revenue then) or the payer is.

Per channel this node is paid on (closed in the period, or still open): what
its latest state pays in all and to this node; a closed channel's ``earned`` is
what the ledger paid this node at the close, for itself.

A creator's royalties from tasks that other providers served reach its wallet
on the ledger, in channels it is no party to: this node cannot count them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from solders.pubkey import Pubkey

from mercato.settlement import ChannelBook

from ._service import task_amounts

PAID_ON = ("open", "closing", "closed")  # a payee's channels with a state worth counting


@dataclass(frozen=True)
class ServedTask:
    """One task or model call this node served, as its receipt tells it."""

    agent: str
    status: str
    price: int
    channel: str  # the stake account it was paid on ("" if free; a transaction for x402)


def earnings(
    served: Iterable[ServedTask],
    listings: Mapping[str, tuple[str, int]],
    book: ChannelBook,
    me: Pubkey,
    since: float,
) -> dict[str, Any]:
    """The earnings since ``since`` (unix seconds). ``listings``: each listing's
    creator (base58) and royalty in basis points, as the registry has them now
    (a listing it no longer has counts no royalty)."""
    per: dict[str, dict[str, Any]] = {}
    for task in served:
        creator, bps = listings.get(task.agent, (task.agent.partition("/")[0], 0))
        row = per.setdefault(task.agent, _listing_row(task.agent, creator == str(me)))
        row["tasks"] += 1
        row["tasks_ok"] += task.status == "ok"
        row["gross"] += task.price
        known = book.channels.get(task.channel)
        payer = known.terms.payer if known is not None else me  # unknown: not the creator
        try:
            creator_key = Pubkey.from_string(creator)
        except ValueError:  # a publisher that is no address: nothing goes to it
            creator_key = me
        amounts = task_amounts(task.price, bps, me, creator_key, payer)
        row["revenue"] += amounts.get(me, 0)
        row["royalties"] += task.price - amounts.get(me, 0)
    listings_out = sorted(per.values(), key=lambda r: (-r["revenue"], r["agent"]))
    channels = [_channel_row(c, me) for c in _paid_on(book, since)]
    totals = {k: sum(r[k] for r in listings_out) for k in _COUNTS}
    totals["closed_earned"] = sum(c["earned"] for c in channels if c["status"] == "closed")
    totals["open_earned"] = sum(c["earned"] for c in channels if c["status"] != "closed")
    return {"since": since, "listings": listings_out, "channels": channels, "totals": totals}


_COUNTS = ("tasks", "tasks_ok", "gross", "revenue", "royalties")


def _listing_row(agent: str, creator: bool) -> dict[str, Any]:
    return {"agent": agent, "creator": creator, **dict.fromkeys(_COUNTS, 0)}


def _paid_on(book: ChannelBook, since: float) -> list[Any]:
    """The channels this node is paid on: open ones, and those closed since ``since``."""
    found = [
        c
        for c in book.channels.values()
        if c.role == "payee"
        and c.status in PAID_ON
        and (c.status != "closed" or c.updated >= since)
    ]
    return sorted(found, key=lambda c: (c.updated, str(c.terms.stake)))


def _channel_row(channel: Any, me: Pubkey) -> dict[str, Any]:
    earned = channel.owed.get(me, 0)
    return {
        "stake": str(channel.terms.stake),
        "peer": channel.peer,
        "status": channel.status,
        "paid": channel.paid,
        "earned": earned,
        "royalties": channel.paid - earned,
        "updated": channel.updated,
    }
