"""The node's settlement service: its wallet, its ledger, its channels, its watcher.

It opens the ledger named in ``[settlement]`` (the embedded one, the Solana
runtime in this process journaled in the data dir; or a localnet or cluster at
``rpc_url``), the channel book, and runs
the watcher that closes channels this node is paid on before their lockup ends
and refunds the ones it paid on after. The wallet is the ``[settlement]
account`` key: its public key is the Solana address. On the embedded ledger and
the localnet an empty wallet is credited ``faucet_lamports`` at start, so a new
node can pay at once, and 1,000 tokens of the ledger's test SPL mint (made here
on the embedded ledger) for x402; that money exists on that ledger only.

Channels opened, closed and refunded (by hand or by the watcher) are told to
``on_event``, which the task service points at the event log.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
from solders import system_program
from solders.hash import Hash
from solders.keypair import Keypair as SolanaKeypair
from solders.pubkey import Pubkey

from mercato.settlement import (
    MAX_RECIPIENTS,
    NONCE_ACCOUNT_SIZE,
    STAKE_ACCOUNT_SIZE,
    TEST_MINT,
    BlockhashExpired,
    Channel,
    ChannelBook,
    ChannelError,
    ChannelTerms,
    Ledger,
    LedgerError,
    LedgerUnreachable,
    SettlementError,
    check_channel,
    check_state,
    close_channel,
    ensure_test_mint,
    forward_held,
    open_channel_book,
    open_embedded_ledger,
    open_transaction,
    payable,
    read_nonce,
    read_stake,
    refund_channel,
    run_watcher,
    split,
    state_receipts,
    token_balance,
)

from .._config import SettlementSection
from .._keys import KeyStore
from .._paths import DataDir
from ._payment import Payment

log = logging.getLogger("mercato.settlement")
STAKE_PROGRAM = Pubkey.from_string("Stake11111111111111111111111111111111111111")
SYSTEM_PROGRAM = system_program.ID
OPEN_ATTEMPTS = 3  # a blockhash that expires unsent three times running is an outage


class SettlementService:
    def __init__(
        self,
        config: SettlementSection,
        wallet: SolanaKeypair,
        ledger: Ledger,
        book: ChannelBook,
    ) -> None:
        self.config = config
        self.wallet = wallet
        self.ledger = ledger
        self.book = book
        self._opening: dict[str, trio.Lock] = {}  # per provider: the payer opens one at a time
        self._adding = trio.Lock()  # the payee binds new channels one at a time
        self._paying: dict[str, trio.Lock] = {}
        self.on_event: Callable[[str, dict[str, Any]], None] | None = None
        """Told of each channel opened, closed or refunded: (kind, data), for the
        event log; it must not block (the task log's `TaskLog.note`)."""

    def _tell(self, kind: str, channel: Channel, **more: Any) -> None:
        if self.on_event is not None:
            data = {"stake": str(channel.terms.stake), "role": channel.role, "peer": channel.peer}
            self.on_event(kind, {**data, **more})

    @property
    def address(self) -> str:
        return str(self.wallet.pubkey())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fund an empty wallet (embedded ledger), then watch channels until cancelled."""
        if self.ledger.faucet and self.config.faucet_lamports:
            try:
                await self._fund()
            except LedgerError as exc:  # a localnet not up yet: the node runs all the same
                log.warning("the wallet could not be funded", extra={"why": str(exc)})
        task_status.started()
        await run_watcher(
            self.book,
            self.ledger,
            {self.wallet.pubkey(): self.wallet},
            self.config.close_margin_s,
            self.config.watch_interval_s,
            self._watched,
        )

    def _watched(self, stake: str, action: str) -> None:
        """Tell of what the watcher did to a channel (the close's signature is the
        watcher's own: the ledger has it)."""
        channel = self.book.channels.get(stake)
        if channel is None:  # "forwarded": a creator paid the royalties held
            return
        if action == "closed":
            self._tell("channel.closed", channel, **self._close_data(channel, ""))
        elif action in ("opened", "refunded", "failed"):
            self._tell(f"channel.{action}", channel, deposit=channel.terms.deposit)

    def _close_data(self, channel: Channel, signature: str) -> dict[str, Any]:
        """A close's event data: what the state paid in all, and to this node."""
        me = self.wallet.pubkey()
        data = {"paid": channel.paid, "earned": channel.owed.get(me, 0), "signature": signature}
        log.info(
            "channel closed: %d lamports, %d of them to this node",
            data["paid"], data["earned"],
            extra={"channel": str(channel.terms.stake), "peer": channel.peer},
        )  # fmt: skip
        return data

    async def _fund(self) -> None:
        await ensure_test_mint(self.ledger)  # the faucet then grants test tokens too
        if await self.ledger.balance(self.wallet.pubkey()):
            return
        await self.ledger.airdrop(self.wallet.pubkey(), self.config.faucet_lamports)
        log.info(
            "the ledger's faucet credited the wallet",
            extra={"address": self.address, "lamports": self.config.faucet_lamports},
        )

    async def pay_for(
        self, provider: str, payee: Pubkey, amounts: dict[Pubkey, int], room: int = 0
    ) -> tuple[bytes, Channel, dict[Pubkey, int]]:
        """The payer's side of a paid task: a channel to ``provider`` that can cover
        ``amounts`` (opened on the ledger if there is none), and the encoded
        `Payment` to send. Call it inside `paying`, and `settle` on a good receipt.
        ``room``: the channel must have at least that much left (a model call paid
        after delivery shows the channel first, with ``amounts`` empty).

        The state is stored before it is returned. ChannelError or LedgerError if
        it cannot be paid (the deposit is too small, the wallet is empty, the
        provider changed wallets, the ledger refuses)."""
        async with self._opening_to(provider):  # one new channel per provider, not per task
            channel = await self._usable(provider, payee, amounts, room)
            if channel is None and self.book.find("payer", provider, "opening"):
                raise ChannelError(
                    "a channel to this provider is still opening (its transaction is not "
                    "confirmed yet): the watcher will find out; pay again shortly"
                )
            if channel is None:
                deposit = max(self.config.deposit_lamports, sum(amounts.values()), room)
                channel = await self._open(provider, payee, deposit, self.config.channel_duration_s)
        channel, state, used = await self.book.pay(channel.terms.stake, amounts, self.wallet)
        owed = {str(k): v for k, v in channel.owed.items()}
        return Payment(channel.terms.to_wire(), owed, state).encode(), channel, used

    def _opening_to(self, provider: str) -> trio.Lock:
        return self._opening.setdefault(provider, trio.Lock())

    def paying(self, provider: str) -> trio.Lock:
        """Held by the user's side around one paid task to ``provider`` (payment, run
        and receipt): the provider sees the states in order, and an unreceipted
        price is known to be credit before the next task pays."""
        return self._paying.setdefault(provider, trio.Lock())

    async def settle(
        self,
        channel: Channel,
        amounts: dict[Pubkey, int],
        receipt: bytes | None = None,
        cumulative: int = 0,
    ) -> Channel:
        """A good receipt: these amounts are used, no longer credit, and the signed
        ``receipt`` is the channel's next one (the next state commits to it)."""
        return await self.book.settle(channel.terms.stake, amounts, receipt, cumulative)

    async def acknowledgement(self, stake: Pubkey) -> bytes | None:
        """The payer's side, after a good receipt: the encoded `Payment` that tells
        the payee about it (the latest amounts, signed again with the receipts
        since), stored first; None if the latest state says it all already. Call
        it inside `paying`, so that states reach the provider in order."""
        channel = await self.book.acknowledge(stake, self.wallet)
        if channel is None or channel.state is None:
            return None
        owed = {str(k): v for k, v in channel.owed.items()}
        return Payment(channel.terms.to_wire(), owed, channel.state).encode()

    async def accept_ack(self, user: str, payment: bytes) -> Channel:
        """The payee's side of an acknowledgement: kept as the latest state if it pays
        exactly what the latest state held pays and commits to more receipts.
        ChannelError, with nothing stored, otherwise."""
        try:
            paid = Payment.decode(payment)
            claimed = {Pubkey.from_string(k): v for k, v in paid.owed.items()}
            terms = ChannelTerms.from_wire(paid.terms)
        except (ChannelError, ValueError) as exc:
            raise ChannelError(f"the acknowledgement is malformed: {exc}") from exc
        known = self.book.channels.get(str(terms.stake))
        if known is None or known.role != "payee" or known.peer != user or known.terms != terms:
            raise ChannelError(
                f"this node is paid on no channel {terms.stake} by you: nothing to acknowledge"
            )
        channel = await self.book.take_ack(terms.stake, claimed, paid.state)
        log.debug(
            "receipts acknowledged",
            extra={"channel": str(terms.stake), "receipts": (channel.receipts or (0,))[0]},
        )
        return channel

    async def _usable(
        self, provider: str, payee: Pubkey, amounts: dict[Pubkey, int], room: int = 0
    ) -> Channel | None:
        now = await self.ledger.now()
        for channel in self.book.find("payer", provider):
            if channel.terms.payee != payee:  # one wallet per provider: no channel farming
                raise ChannelError("the provider names another wallet than its open channel's")
            recipients = set(channel.owed) | set(amounts)
            fresh = channel.terms.expires - now > 2 * self.config.close_margin_s
            fits = channel.left >= max(sum(amounts.values()), room)
            if (
                fresh
                and fits
                and len(recipients) <= MAX_RECIPIENTS
                and await self._still_open(channel)
            ):
                return channel
        return None

    async def _still_open(self, channel: Channel) -> bool:
        """False (and the channel marked closed) if the payee has closed it already."""
        account = await self.ledger.account(channel.terms.stake)
        if account is not None and account.lamports >= channel.terms.deposit:
            return True
        closed = await self.book.mark(channel.terms.stake, "closed")
        self._tell("channel.closed", closed, paid=closed.paid, earned=0, signature="")
        return False

    async def open_channel(
        self, peer: str, payee: Pubkey, deposit: int, duration_s: int
    ) -> Channel:
        """Open a channel to ``peer`` by hand (paid tasks to it will use it, so it must
        outlive twice the close margin). ChannelError if it could not serve."""
        if payee == self.wallet.pubkey():
            raise ChannelError("a channel to this node's own wallet pays nobody")
        shortest = 2 * self.config.close_margin_s + 600
        if duration_s < shortest:
            raise ChannelError(
                f"a channel must last at least {shortest} s (twice [settlement] "
                "close_margin_s, and 10 minutes of use), or tasks would never use it"
            )
        async with self._opening_to(peer):
            if self.book.find("payer", peer, "opening"):
                raise ChannelError(f"a channel to {peer} is still opening: see `channel ls`")
            for channel in self.book.find("payer", peer):
                if channel.terms.payee != payee:
                    raise ChannelError(
                        f"the open channel to {peer} pays {channel.terms.payee}, not {payee}"
                    )
            return await self._open(peer, payee, deposit, duration_s)

    async def close_channel(self, stake: str) -> tuple[Channel, str]:
        """Close a channel this node is paid on, now, with its latest state; the
        royalties it held for creators are forwarded at once where the ledger
        takes them (the watcher retries the rest)."""
        channel = self.book.get(stake)
        signature = await close_channel(self.book, self.ledger, self.wallet, channel)
        closed = self.book.get(stake)
        self._tell("channel.closed", closed, **self._close_data(closed, str(signature)))
        try:
            await forward_held(self.book, self.ledger, self.wallet)
        except SettlementError as exc:
            log.warning("royalties held could not be forwarded yet", extra={"why": str(exc)})
        return self.book.get(stake), signature

    async def refund_channel(self, stake: str) -> tuple[Channel, str]:
        """Take back what a channel this node paid on still holds (after its lockup)."""
        channel = self.book.get(stake)
        signature = await refund_channel(self.book, self.ledger, self.wallet, channel)
        refunded = self.book.get(stake)
        self._tell("channel.refunded", refunded, signature=str(signature))
        return refunded, signature

    async def airdrop(self, lamports: int) -> str:
        """Lamports from the ledger's faucet (embedded and localnet ledgers only)."""
        if not self.ledger.faucet:
            raise LedgerError(f"the {self.ledger.name} ledger has no faucet")
        return await self.ledger.airdrop(self.wallet.pubkey(), lamports)

    async def _open(self, provider: str, payee: Pubkey, deposit: int, duration_s: int) -> Channel:
        """A new channel to ``provider``, recorded as opening before its transaction
        is sent (a crash cannot lose the deposit: the watcher finds it on the
        ledger or marks it failed). Built again with a fresh blockhash if it
        expired unsent."""
        for attempt in range(OPEN_ATTEMPTS):
            expires = await self.ledger.now() + duration_s
            blockhash = await self.ledger.blockhash()
            tx, terms = open_transaction(
                self.wallet, payee, deposit, expires,
                await self.ledger.rent(STAKE_ACCOUNT_SIZE),
                await self.ledger.rent(NONCE_ACCOUNT_SIZE),
                blockhash,
            )  # fmt: skip
            # Until it is open, the nonce field keeps the opening's blockhash: the
            # watcher tells from it whether the opening can still land. Recorded
            # before it is sent, so a crash or a cancellation while sending loses
            # nothing (the row stays opening, and the watcher resolves it).
            await self.book.add(terms, "payer", provider, blockhash, "opening")
            try:
                await self.ledger.send(tx)
            except LedgerUnreachable:
                raise  # it may still land: the watcher will find out
            except LedgerError as exc:
                if await self._landed(terms):  # a re-send of one that landed
                    return await self._opened(terms, provider)
                await self.book.mark(terms.stake, "failed")
                if isinstance(exc, BlockhashExpired) and attempt + 1 < OPEN_ATTEMPTS:
                    continue
                raise
            return await self._opened(terms, provider)
        raise AssertionError("unreachable")

    async def _landed(self, terms: ChannelTerms) -> bool:
        """Whether the stake account is on the ledger; LedgerUnreachable (the row
        stays opening) if the ledger cannot say."""
        try:
            account = await self.ledger.account(terms.stake)
        except LedgerError as exc:
            raise LedgerUnreachable(f"whether the channel opened is unknown: {exc}") from exc
        return account is not None and account.owner == STAKE_PROGRAM

    async def _opened(self, terms: ChannelTerms, provider: str) -> Channel:
        channel = await self.book.opened(terms.stake, await self._nonce_of(terms))
        log.info("channel opened", extra={"channel": str(terms.stake), "provider": provider})
        self._tell("channel.opened", channel, deposit=terms.deposit, expires=terms.expires)
        return channel

    async def _nonce_of(self, terms: ChannelTerms) -> Hash:
        account = await self.ledger.account(terms.nonce)
        if account is None:
            raise LedgerError("the channel's nonce account is not on the ledger")
        return read_nonce(account.data)[1]

    async def accept_payment(
        self, user: str, payment: bytes, price: int, royalty_bps: int, creator: Pubkey
    ) -> tuple[Channel, dict[Pubkey, int]]:
        """The payee's side: check the payment's channel on the ledger (the first time
        and every time: the deposit must still be there) and its state, keep the
        state and count the task before returning. ChannelError with a message
        for the user; `unpay` if the task then cannot run."""
        try:
            paid = Payment.decode(payment)
            claimed = {Pubkey.from_string(k): v for k, v in paid.owed.items()}
        except (ChannelError, ValueError) as exc:
            raise ChannelError(f"the payment is malformed: {exc}") from exc
        terms = ChannelTerms.from_wire(paid.terms)
        if terms.payee != self.wallet.pubkey():
            raise ChannelError("that channel pays another wallet than this node's")
        if state_receipts(paid.state) is None:
            raise ChannelError("the state carries no receipts commitment (a memo): see `Payment`")
        stake = await self.ledger.account(terms.stake)
        nonce = await self.ledger.account(terms.nonce)
        if stake is None or nonce is None:
            raise ChannelError(
                f"that channel is not on this node's ledger ({self.ledger.name}): a payer and "
                "a provider need the same ledger (an embedded one is private to its node)"
            )
        if stake.owner != STAKE_PROGRAM or nonce.owner != SYSTEM_PROGRAM:
            raise ChannelError("that channel's accounts are not a stake and a nonce account")
        try:
            authority, value = read_nonce(nonce.data)
            meta = read_stake(stake.data)
        except LedgerError as exc:
            raise ChannelError(f"that channel's accounts are not a channel's: {exc}") from exc
        check_channel(terms, stake.lamports, meta, authority, await self.ledger.now())
        amounts = task_amounts(price, royalty_bps, terms.payee, creator, terms.payer)
        async with self._adding:
            known = self.book.channels.get(str(terms.stake))
            if known is None:
                # Bound to this peer only once its state checks out, and never on a
                # nonce another channel uses (closing one would void the other).
                if self.book.uses_nonce(terms.nonce):
                    raise ChannelError("that channel's nonce account belongs to another channel")
                check_state(terms, value, payable(claimed, terms.payee), paid.state)
                known = await self.book.add(terms, "payee", user, value)
                log.info(
                    "paid on a new channel",
                    extra={"channel": str(terms.stake), "peer": user, "deposit": terms.deposit},
                )
                self._tell("channel.opened", known, deposit=terms.deposit, expires=terms.expires)
        if known.peer != user or known.terms != terms:
            raise ChannelError("that channel belongs to another peer")
        channel = await self.book.accept(terms.stake, amounts, paid.state, claimed)
        return channel, amounts

    async def unpay(self, channel: Channel, amounts: dict[Pubkey, int]) -> None:
        """The payee's side: a task it accepted could not run; its price is credit."""
        await self.book.unsettle(channel.terms.stake, amounts)

    async def wallet_info(self, assets: Sequence[Pubkey] = ()) -> dict[str, Any]:
        """The wallet: address, ledger, lamports, the ledger's clock, royalties
        held, and its token balances (`token_balances`)."""
        return {
            "address": self.address,
            "ledger": self.ledger.name,
            "balance": await self.ledger.balance(self.wallet.pubkey()),
            "now": await self.ledger.now(),
            "held": self.held_info(),
            "tokens": await self.token_balances(assets),
        }

    async def token_balances(self, assets: Sequence[Pubkey] = ()) -> list[dict[str, Any]]:
        """What the wallet's associated token accounts hold of the test mint (on a
        ledger with a faucet) and of each mint in ``assets``, in base units; a mint
        the ledger does not have is left out."""
        mints = [TEST_MINT] if self.ledger.faucet else []
        mints += [m for m in assets if m not in mints]
        found = []
        for mint in mints:
            held = await token_balance(self.ledger, self.wallet.pubkey(), mint)
            if held is not None:
                found.append({"mint": str(mint), "amount": held.amount, "decimals": held.decimals})
        return found

    def held_info(self) -> dict[str, Any]:
        """Royalties this node holds for creators: due (waiting until the ledger can
        take them), sending, and forwarded so far, in lamports."""
        totals = {"due": 0, "sending": 0, "paid": 0}
        due: dict[str, int] = {}
        for h in self.book.held.values():
            totals[h.status] = totals.get(h.status, 0) + h.amount
            if h.status != "paid":
                due[str(h.recipient)] = due.get(str(h.recipient), 0) + h.amount
        return {**totals, "recipients": due}

    def channels(self) -> list[dict[str, Any]]:
        return [
            channel_info(c)
            for c in sorted(self.book.channels.values(), key=lambda c: c.terms.expires)
        ]


def channel_info(c: Channel) -> dict[str, Any]:
    return {
        **c.terms.to_wire(),
        "role": c.role,
        "peer": c.peer,
        "status": c.status,
        "paid": c.paid,
        "left": c.left,
        "owed": {str(k): v for k, v in c.owed.items()},
        "settled": {str(k): v for k, v in c.settled.items()},
        "receipts": (c.receipts or (0,))[0],  # how many receipts the latest state commits to
    }


def task_amounts(
    price: int, royalty_bps: int, payee: Pubkey, creator: Pubkey, payer: Pubkey
) -> dict[Pubkey, int]:
    """What one task at ``price`` owes: the provider's share and the creator's
    royalty (waived when the creator is the one paying)."""
    share, royalty = split(price, royalty_bps)
    if payee == creator or payer == creator:
        share = share + royalty if payee == creator else share
        return {payee: share} if share else {}
    return {k: v for k, v in ((payee, share), (creator, royalty)) if v}


@asynccontextmanager
async def open_settlement(
    config: SettlementSection, datadir: DataDir, keys: KeyStore, ledger: Ledger | None = None
) -> AsyncIterator[SettlementService]:
    """The settlement service of a node, its files closed on exit. A ``ledger`` given
    is used as it is (and left open)."""
    account = await trio.to_thread.run_sync(keys.account, config.account)
    wallet = SolanaKeypair.from_seed(account.seed)
    async with contextlib.AsyncExitStack() as stack:
        if ledger is None and config.ledger == "embedded":
            ledger = await stack.enter_async_context(open_embedded_ledger(datadir.ledger_file))
        elif ledger is None:
            from mercato.settlement import (
                RpcLedger,  # imported only for this ledger: see settlement
            )

            remote = RpcLedger(config.rpc_url, config.ledger, faucet=config.ledger == "localnet")
            stack.push_async_callback(remote.aclose)
            ledger = remote
        book = await stack.enter_async_context(open_channel_book(datadir.channels_file))
        yield SettlementService(config, wallet, ledger, book)
