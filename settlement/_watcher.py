"""The watcher: closes channels before their lockup ends and refunds them after.

Each round looks at every open channel in the book, against the ledger's clock:

- payee, with a state, within ``margin_s`` of T: check the channel's accounts,
  countersign the latest state, simulate it (a failed durable-nonce transaction
  would still spend the nonce on a real cluster), send it, mark it closed;
- payer, past T: take back whatever the stake account still holds (all of an
  unclosed deposit, or the rent reserve a close left), mark it refunded;
- a lockup the payee moved is reported (a breach of the channel's terms).

A failure is logged and retried in a later round, each channel backing off
from RETRY_S doubling to RETRY_MAX_S. `settle_due` is one round; `run_watcher`
repeats it until cancelled.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import trio
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from ._book import Channel, ChannelBook, payable
from ._channel import check_stake, check_state, countersign, refund_transaction
from ._errors import SettlementError
from ._ledger import Ledger
from ._programs import read_stake

log = logging.getLogger("mercato.settlement")

RETRY_S = 5.0
RETRY_MAX_S = 600.0


@dataclass
class WatchState:
    """Per-channel backoff between failed attempts (monotonic seconds)."""

    not_before: dict[str, float] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    breaches: set[str] = field(default_factory=set)


async def settle_due(
    book: ChannelBook,
    ledger: Ledger,
    keys: Mapping[Pubkey, Keypair],
    margin_s: int,
    watch: WatchState | None = None,
) -> list[tuple[str, str]]:
    """One round; returns (channel, what was done) for each channel acted on."""
    watch = watch or WatchState()
    now, done = await ledger.now(), []
    for channel in [c for c in book.channels.values() if c.status == "open"]:
        stake = str(channel.terms.stake)
        if trio.current_time() < watch.not_before.get(stake, 0.0):
            continue
        try:
            action = await _act(book, ledger, keys, channel, now, margin_s, watch)
        except SettlementError as exc:
            failures = watch.failures[stake] = watch.failures.get(stake, 0) + 1
            delay = min(RETRY_MAX_S, RETRY_S * 2 ** (failures - 1))
            watch.not_before[stake] = trio.current_time() + delay
            log.warning(
                "channel settlement failed; will retry",
                extra={"channel": stake, "why": str(exc), "retry_s": delay},
            )
            continue
        if action:
            watch.failures.pop(stake, None)
            done.append((stake, action))
    return done


async def _act(
    book: ChannelBook,
    ledger: Ledger,
    keys: Mapping[Pubkey, Keypair],
    channel: Channel,
    now: int,
    margin_s: int,
    watch: WatchState,
) -> str:
    terms, stake = channel.terms, str(channel.terms.stake)
    account = await ledger.account(terms.stake)
    if channel.role == "payee":
        if account is not None and stake not in watch.breaches:
            meta = read_stake(account.data)
            if meta.lockup_until != terms.expires:
                watch.breaches.add(stake)
                log.warning(
                    "the lockup of a channel moved",
                    extra={"channel": stake, "from": terms.expires, "to": meta.lockup_until},
                )
        if channel.state is None or now < terms.expires - margin_s:
            return ""
        if account is not None:
            check_stake(terms, read_stake(account.data), account.lamports)
        checked = check_state(
            terms, channel.nonce, payable(channel.owed, terms.payee), channel.state
        )
        tx = countersign(checked, keys[terms.payee])
        await ledger.simulate(tx)
        await ledger.send(tx)
        await book.mark(terms.stake, "closed")
        log.info("channel closed", extra={"channel": stake, "paid": channel.paid})
        return "closed"
    if now <= terms.expires:
        return ""
    if account is not None and account.lamports:
        tx = refund_transaction(
            terms, keys[terms.payer], account.lamports, await ledger.blockhash()
        )
        await ledger.send(tx)
    await book.mark(terms.stake, "refunded")
    log.info("channel refunded", extra={"channel": stake})
    return "refunded"


async def run_watcher(
    book: ChannelBook,
    ledger: Ledger,
    keys: Mapping[Pubkey, Keypair],
    margin_s: int,
    interval_s: float = 10.0,
) -> None:
    """`settle_due` every ``interval_s`` until cancelled."""
    watch = WatchState()
    while True:
        await settle_due(book, ledger, keys, margin_s, watch)
        await trio.sleep(interval_s)
