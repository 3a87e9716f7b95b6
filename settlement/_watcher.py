"""The watcher: closes channels before their lockup ends and refunds them after.

Each round looks at every open channel in the book, against the ledger's clock:

- payee, with a state, within ``margin_s`` of T: check the channel's accounts,
  countersign the latest state, simulate it (a failed durable-nonce transaction
  would still spend the nonce on a real cluster), send it, mark it closed;
- payer, past T: take back whatever the stake account still holds (all of an
  unclosed deposit, or the rent reserve a close left), mark it refunded;
- a lockup the payee moved is reported (a breach of the channel's terms);
- payer, an opening that was sent but never confirmed (a crash, an outage):
  open if the ledger has it, failed once OPENING_LIFE_S passed without it;
- payee, royalties its closes received for creators: forwarded (`_forward`).

A failure is logged and retried in a later round, each channel backing off
from RETRY_S doubling to RETRY_MAX_S. `settle_due` is one round; `run_watcher`
repeats it until cancelled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import trio
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.transaction import Transaction

from ._book import Channel, ChannelBook, held, payable, payable_v1
from ._channel import check_stake, check_state, countersign, refund_transaction, state_receipts
from ._errors import ChannelError, LedgerError, LedgerUnreachable, SettlementError
from ._forward import forward_held
from ._ledger import AccountInfo, Ledger
from ._programs import STAKE_PROGRAM, read_nonce, read_stake

log = logging.getLogger("mercato.settlement")

RETRY_S = 5.0
RETRY_MAX_S = 600.0
FAILED_LOOK_S = 86_400.0
OPENING_LIFE_S = 300.0  # past any blockhash's life on a cluster (about 60 to 90 s)


@dataclass
class WatchState:
    """Per-channel backoff between failed attempts (monotonic seconds)."""

    not_before: dict[str, float] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    breaches: set[str] = field(default_factory=set)
    keyless: set[str] = field(default_factory=set)


async def settle_due(
    book: ChannelBook,
    ledger: Ledger,
    keys: Mapping[Pubkey, Keypair],
    margin_s: int,
    watch: WatchState | None = None,
) -> list[tuple[str, str]]:
    """One round; returns (channel, what was done) for each channel acted on, then
    (creator, "forwarded") for each creator paid the royalties this node held."""
    watch = watch or WatchState()
    try:
        now, done = await ledger.now(), []
    except SettlementError as exc:
        log.warning("the ledger did not answer; will retry", extra={"why": str(exc)})
        return []
    for channel in [c for c in book.channels.values() if _watched(c)]:
        stake = str(channel.terms.stake)
        if trio.current_time() < watch.not_before.get(stake, 0.0):
            continue
        key = channel.terms.payee if channel.role == "payee" else channel.terms.payer
        if key not in keys:
            if stake not in watch.keyless:
                watch.keyless.add(stake)
                log.warning(
                    "a channel's key is not this node's wallet: it is left alone",
                    extra={"channel": stake, "key": str(key)},
                )
            continue
        try:
            action = await _act(book, ledger, keys, channel, now, margin_s, watch)
        except Exception as exc:  # one channel's trouble must not stop the others
            failures = watch.failures[stake] = watch.failures.get(stake, 0) + 1
            delay = min(RETRY_MAX_S, RETRY_S * 2 ** (failures - 1))
            watch.not_before[stake] = trio.current_time() + delay
            log.warning(
                "channel settlement failed; will retry",
                extra={"channel": stake, "why": str(exc), "retry_s": delay},
                exc_info=not isinstance(exc, SettlementError),
            )
            continue
        if action:
            watch.failures.pop(stake, None)
            done.append((stake, action))
    for wallet in keys.values():
        try:
            paid = await forward_held(book, ledger, wallet)
            done.extend((str(r), "forwarded") for r in paid)
        except SettlementError as exc:
            log.warning("royalties held could not be forwarded; will retry",
                        extra={"why": str(exc)})  # fmt: skip
    return done


def _watched(channel: Channel) -> bool:
    # A payer's channel the payee closed still holds its rent reserve until refunded;
    # one marked failed is looked at once more, after its lockup.
    if channel.status == "failed":
        return channel.role == "payer" and time.time() < channel.terms.expires + FAILED_LOOK_S
    return channel.status in ("open", "opening", "closing") or (
        channel.role == "payer" and channel.status == "closed"
    )


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
    if channel.status == "opening":
        return await _resolve_opening(book, ledger, channel, account)
    if channel.status == "failed":  # in case one landed after all: its money back after T
        if now <= terms.expires or account is None or account.owner != STAKE_PROGRAM:
            return ""
        await refund_channel(book, ledger, keys[terms.payer], channel)
        return "refunded"
    if channel.role == "payee":
        if account is not None and stake not in watch.breaches:
            meta = read_stake(account.data)
            if meta.lockup_until != terms.expires:
                watch.breaches.add(stake)
                log.warning(
                    "the lockup of a channel moved",
                    extra={"channel": stake, "from": terms.expires, "to": meta.lockup_until},
                )
        due = now >= terms.expires - margin_s or channel.status == "closing"
        if channel.state is None or not due:
            return ""
        await close_channel(book, ledger, keys[terms.payee], channel)
        return "closed"
    if now <= terms.expires:
        return ""
    await refund_channel(book, ledger, keys[terms.payer], channel)
    return "refunded"


async def close_channel(book: ChannelBook, ledger: Ledger, payee: Keypair, channel: Channel) -> str:
    """The payee's close: no more payments are taken (``closing``), then the latest
    state, countersigned, simulated (a failed durable-nonce transaction still
    spends the nonce on a cluster) and sent; the channel marked closed. Returns
    the signature ("" if a close sent before had landed). ChannelError if there
    is nothing to close with; LedgerError if the ledger refuses (the channel is
    open again then), LedgerUnreachable if it may still land (it stays closing,
    and the watcher goes on)."""
    terms = channel.terms
    if channel.role == "payee" and channel.state is None:
        raise ChannelError("no payment on this channel yet: nothing to close with")
    async with book.closing_lock(terms.stake):
        channel = await book.begin_close(terms.stake)
        if channel.state is None:  # checked above: a state is never taken back
            raise ChannelError("no payment on this channel yet: nothing to close with")
        tx, holding = _closing(channel, payee)
        try:
            if await _nonce_moved(ledger, channel):
                signature = ""  # only the payee can move the nonce: a close of ours landed
            else:
                account = await ledger.account(terms.stake)
                if account is not None:
                    check_stake(terms, read_stake(account.data), account.lamports)
                await ledger.simulate(tx)
                signature = await ledger.send(tx)
        except LedgerUnreachable:
            raise  # it may still land: it stays closing, and the watcher goes on
        except SettlementError as exc:
            if not await _nonce_moved(ledger, channel):
                await book.mark(terms.stake, "open")
                raise
            # The nonce moved, yet this close failed: on a cluster a failed close
            # still spends the nonce, and every state of the channel is void.
            log.error(
                "a close failed on the ledger and voided the channel's states",
                extra={"channel": str(terms.stake), "why": str(exc), "unpaid": channel.paid},
            )
            await book.mark(terms.stake, "failed")
            return ""
        await book.closed(terms.stake, holding)
    log.info("channel closed", extra={"channel": str(terms.stake), "paid": channel.paid})
    return signature


def _closing(channel: Channel, payee: Keypair) -> tuple[Transaction, dict[Pubkey, int]]:
    """The countersigned close of ``channel``'s latest state, and the royalties it
    pays the payee to hold for others. A state signed before version 2 payments
    held nothing (it left small royalties out)."""
    terms, state = channel.terms, channel.state or b""
    receipts = state_receipts(state)  # the payer's commitment, memo and all
    try:
        payouts = payable(channel.owed, terms.payee)
        checked = check_state(terms, channel.nonce, payouts, state, receipts=receipts)
        holding = held(channel.owed, terms.payee)
    except ChannelError:
        payouts = payable_v1(channel.owed, terms.payee)
        checked = check_state(terms, channel.nonce, payouts, state, receipts=receipts)
        holding = {}
    return countersign(checked, payee), holding


async def _nonce_moved(ledger: Ledger, channel: Channel) -> bool:
    nonce = await ledger.account(channel.terms.nonce)
    return nonce is not None and read_nonce(nonce.data)[1] != channel.nonce


async def refund_channel(
    book: ChannelBook, ledger: Ledger, payer: Keypair, channel: Channel
) -> str:
    """The payer's refund after the lockup: whatever the stake account still holds
    (all of an unclosed deposit, or the rent a close left) back to the payer;
    the channel marked refunded. LockupInForce before T; the signature, or ""
    if there was nothing left to take."""
    terms = channel.terms
    if channel.role != "payer" or channel.status not in ("open", "closed", "failed"):
        raise ChannelError(
            f"only the payer refunds a channel (this is {channel.role}, {channel.status})"
        )
    account = await ledger.account(terms.stake)
    signature = ""
    if account is not None and account.lamports:
        tx = refund_transaction(terms, payer, account.lamports, await ledger.blockhash())
        signature = await ledger.send(tx)
    await book.mark(terms.stake, "refunded")
    log.info("channel refunded", extra={"channel": str(terms.stake)})
    return signature


async def _resolve_opening(
    book: ChannelBook, ledger: Ledger, channel: Channel, account: AccountInfo | None
) -> str:
    """A channel whose opening was sent but not confirmed (a crash, an outage): open
    if the ledger has its stake account with the deposit, failed once the
    opening's blockhash (kept in the nonce field until then) can no longer land."""
    terms = channel.terms
    if account is not None and account.owner == STAKE_PROGRAM:
        nonce = await ledger.account(terms.nonce)
        if nonce is None or account.lamports < terms.deposit:
            raise LedgerError("the channel's accounts are on the ledger but not as opened")
        await book.opened(terms.stake, read_nonce(nonce.data)[1])
        log.info("channel found open on the ledger", extra={"channel": str(terms.stake)})
        return "opened"
    expired = await ledger.blockhash_expired(channel.nonce)
    if expired is None:  # this ledger cannot tell: past any blockhash's life, then
        expired = time.time() - channel.updated > OPENING_LIFE_S
    if not expired:
        return ""  # it may still land
    if await ledger.account(terms.stake) is not None:
        return ""  # it landed just now: the next round opens it
    await book.mark(terms.stake, "failed")
    log.info("channel never opened", extra={"channel": str(terms.stake)})
    return "failed"


async def run_watcher(
    book: ChannelBook,
    ledger: Ledger,
    keys: Mapping[Pubkey, Keypair],
    margin_s: int,
    interval_s: float = 10.0,
    on_done: Callable[[str, str], None] | None = None,
) -> None:
    """`settle_due` every ``interval_s`` until cancelled; ``on_done(channel, action)``
    hears of each thing a round did (it must not block, nor raise)."""
    watch = WatchState()
    while True:
        try:
            done = await settle_due(book, ledger, keys, margin_s, watch)
        except Exception:  # one bad round must not end the watching
            log.exception("the channel watcher's round failed; it goes on")
        else:
            for stake, action in done:
                if on_done is not None:
                    on_done(stake, action)
        await trio.sleep(interval_s)
