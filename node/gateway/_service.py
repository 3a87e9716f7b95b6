"""The gateway's service: x402 resource server and its own facilitator, on the node's ledger.

A paid call, in order (each step refuses with nothing run and nothing settled):

1. the agent's offer now (`TaskService.offer_here`: served, released, not sold
   by plan, runs of at most ``MAX_PAID_RUN_S``) and its requirements:
   ``ceil(price in lamports * units_per_lamport)`` base units of the asset to
   the provider's token account, the node paying the fee;
2. the ``PAYMENT-SIGNATURE`` header: a version 2 payload whose ``accepted`` is
   exactly those requirements, and whose transaction settlement's
   `check_exact_payment` finds to be exactly that transfer; one payment from a
   token account at a time (``payment_in_flight``), so one buyer cannot make
   the node pay for many transactions that its balance cannot all cover, nor
   hold every paid slot;
3. the node co-signs it and records it in the book, keyed by its message: a
   payment recorded before is a replay (``duplicate_settlement``), even while
   the first call is still running;
4. the ledger simulates the co-signed transaction (the buyer's balance, the
   blockhash);
5. the agent runs on this node (`TaskService.run_here`), with a receipt;
6. only if the run ended ``ok`` does the node send the transaction, again
   until the ledger has it or it is known never to land (its blockhash
   expired), for at most ``SETTLE_TIMEOUT_S``; then the answer carries the
   output, the receipt and the SettleResponse.

A call that settles nothing releases its book row, so the same payment may be
sent again. No output leaves while the ledger cannot say whether the payment
landed: the row stays (``unknown``) with the run's output and signed receipt,
and the caller gets 202 ``settlement_pending``. The same payment sent again
gets that answer once the ledger shows the payment landed (every time: it is
idempotent), or the x402 error once it is known never to have landed (the
row is then released); the forwarder resolves such rows too. Whether a
payment (or a royalty forward) can still land is asked of the ledger's
blockhash first, then of its signature: once the blockhash expired, a
signature not found never landed; a ledger that does not answer decides
nothing.

The creator's royalty: the official ``exact`` client makes one transfer, to
``payTo``, so the creator's share cannot be a second transfer of the payment.
The provider forwards it right after settlement (`_forward_due`): a
TransferChecked of ``floor(amount * royalty_bps / 10,000)`` from its token
account to the creator's (created if missing, at the provider's cost). What is
owed stays in the book until the ledger has the forward, retried on the next
settlement and every ``FORWARD_EVERY_S``.

Paid calls run at most ``PAID_AT_ONCE`` at a time; calls without payment take
no ledger call and no run (the blockhash offered is cached ``BLOCKHASH_TTL_S``),
so a flood of them cannot starve a paid one.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import trio
from solders.hash import Hash
from solders.instruction import Instruction
from solders.message import Message
from solders.pubkey import Pubkey
from solders.transaction import Transaction, VersionedTransaction

from mercato.p2p import Refused
from mercato.settlement import (
    MEMO_PROGRAM,
    TEST_MINT,
    TOKEN_2022,
    TOKEN_PROGRAM,
    BlockhashExpired,
    CheckedPayment,
    ExactRequirements,
    Ledger,
    LedgerError,
    LedgerUnreachable,
    PaymentInvalid,
    associated_token_address,
    check_exact_payment,
    cosign_payment,
    create_ata_idempotent,
    ensure_test_mint,
    payment_key,
    read_mint,
    transfer_checked,
)

from .._config import GatewaySection, SettlementSection
from .._events import EventLog
from .._metrics import NodeMetrics
from .._store import Store
from ..money import SettlementService
from ..tasks import LocalOffer, LocalRun, Receipt, TaskService
from . import _book as book
from ._messages import (
    DEVNET,
    DUPLICATE,
    MAINNET,
    NO_MATCHING_REQUIREMENTS,
    PAYMENT_IN_FLIGHT,
    PAYMENT_REQUIRED,
    SIMULATION_FAILED,
    TRANSACTION_FAILED,
    GatewayRefused,
    accepted_matches,
    decode_payment_signature,
    requirements_json,
)

log = logging.getLogger("mercato.gateway")

PAID_AT_ONCE = 16
"""Paid calls between their check and their answer at once; more wait their turn."""
OFFER_TTL_S = 1.0
"""How long a 402 may answer from an agent's offer without asking the registry again."""
BLOCKHASH_TTL_S = 1.0
"""How long a blockhash offered in 402 answers is reused (a cluster's lasts ~60 s)."""
FORWARD_EVERY_S = 30.0
"""How often royalties still owed, and payments the ledger could not confirm, are retried."""
SETTLE_TIMEOUT_S = 90.0
"""The most a settlement may take once the transaction is sent (it is shielded):
past a blockhash's life (~150 blocks), so it mostly ends known."""
SEND_AGAIN_S = 1.0
"""The pause before a payment is sent again after the ledger did not answer."""
MAX_PAID_RUN_S = 30.0
"""The longest run sold per call: the payment, whose blockhash lasts about a
minute, is sent only after the run, and must land before it expires."""
ASSET_RETRY_S = 5.0
"""How long a failure to find the asset is answered without asking the ledger again."""
CANNOT_LAND_AFTER_S = 3600.0
"""A payment or forward not seen on the ledger this long after it was made, on a
ledger that cannot say whether its blockhash expired, never will land: its
blockhash (at most ~150 slots old then) has long expired."""
FREE_USER = "x402:anonymous"
TOKEN_PROGRAMS = frozenset({TOKEN_PROGRAM, TOKEN_2022})


def default_network(settlement: SettlementSection) -> str:
    """x402's CAIP-2 id for the node's ledger when ``[gateway] network`` is empty:
    mainnet's when the RPC URL is mainnet's, else devnet's (the official client
    knows mainnet, devnet and testnet, and takes any RPC URL for them)."""
    if settlement.ledger == "rpc" and "mainnet" in settlement.rpc_url.lower():
        return MAINNET
    return DEVNET


@dataclass(frozen=True)
class Asset:
    """The mint runs are paid in, as the ledger has it."""

    mint: Pubkey
    decimals: int
    token_program: Pubkey


@dataclass(frozen=True)
class Priced:
    """An agent's offer and what a run of it costs over x402 (None: it is free)."""

    offer: LocalOffer
    requirements: ExactRequirements | None


@dataclass(frozen=True)
class Paid:
    """A call answered: its run's output and signed receipt, and the SettleResponse
    fields (no transaction: it was free)."""

    output: bytes
    receipt: Receipt | None
    """None while the payment is not settled: nothing of the run is given then."""
    signed: bytes
    transaction: str = ""
    payer: str = ""
    amount: int = 0
    settled: bool = True
    """False when the ledger could not yet say whether the payment landed: the
    output is withheld (the same payment sent again gets it once it did)."""

    @classmethod
    def of(cls, run: LocalRun, transaction: str = "", payer: str = "", amount: int = 0) -> Paid:
        return cls(run.result.output, run.receipt, run.signed, transaction, payer, amount)

    @classmethod
    def pending(cls, row: book.PaymentRow) -> Paid:
        return cls(b"", None, b"", row.signature, row.payer, row.amount, settled=False)


class GatewayService:
    def __init__(
        self,
        config: GatewaySection,
        settlement: SettlementSection,
        tasks: TaskService,
        money: SettlementService,
        store: Store,
        events: EventLog,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self.config = config
        self.network = config.network or default_network(settlement)
        self._tasks = tasks
        self._money = money
        self._store = store
        self._events = events
        self._metrics = metrics
        self._units = Fraction(str(config.units_per_lamport))
        self._asset: Asset | None = None
        self._mints: dict[Pubkey, Asset] = {}
        self._preparing = trio.Lock()
        self._paying = trio.CapacityLimiter(PAID_AT_ONCE)
        self._offers: dict[str, tuple[float, Priced]] = {}
        self._blockhash: tuple[float, str] = (-math.inf, "")
        self._blockhash_lock = trio.Lock()
        self._in_flight: set[str] = set()
        """Payments (their keys) being called, settled or resolved now."""
        self._sources: set[str] = set()
        """Token accounts a payment in flight pays from: one at a time from each."""
        self._asset_failed: tuple[float, int, str, str, int] | None = None
        self.settle_timeout = SETTLE_TIMEOUT_S
        self._wake = trio.Event()
        self._forwarding = trio.Lock()  # one round at a time: a forward is sent once
        self.settled = 0
        self.forwarded = 0

    @property
    def _ledger(self) -> Ledger:
        return self._money.ledger

    # -- lifecycle ---------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Find the asset (and open the provider's token account), then forward
        royalties and resolve unconfirmed payments until cancelled. A ledger that
        does not answer yet is tried again on the first call."""
        try:
            await self.asset()
        except GatewayRefused as exc:
            log.warning("the gateway's asset is not ready", extra={"why": str(exc)})
        task_status.started()
        while True:
            try:
                await self._forward_due()
            except (LedgerError, GatewayRefused) as exc:
                log.warning("royalties could not be forwarded yet", extra={"why": str(exc)})
            except Exception:  # a bug here must not take the gateway down: what is owed stays
                log.exception("the royalty forwarder failed; it tries again later")
            with trio.move_on_after(FORWARD_EVERY_S):
                await self._wake.wait()
            self._wake = trio.Event()

    async def asset(self) -> Asset:
        """The mint runs are paid in (``[gateway] asset``, or the test mint of a local
        ledger), with the provider's token account opened; GatewayRefused (503)
        while the ledger does not have it."""
        if self._asset is not None:
            return self._asset
        self._failed_lately()
        async with self._preparing:
            if self._asset is None:
                self._failed_lately()
                try:
                    self._asset = await self._prepare()
                except GatewayRefused as exc:  # not asked again for a while: each try may
                    # take the RPC's whole timeout, and every request would wait for it
                    until = trio.current_time() + ASSET_RETRY_S
                    self._asset_failed = (until, exc.status, exc.reason, str(exc), exc.retry_after)
                    raise
            return self._asset

    def _failed_lately(self) -> None:
        """The last failure to find the asset again, while it is recent."""
        failed = self._asset_failed
        if failed is not None and trio.current_time() < failed[0]:
            raise GatewayRefused(*failed[1:])

    async def _prepare(self) -> Asset:
        ledger = self._ledger
        mint = Pubkey.from_string(self.config.asset) if self.config.asset else TEST_MINT
        try:
            if mint == TEST_MINT and ledger.faucet:
                await ensure_test_mint(ledger)
            asset = await self._mint(mint)
            wallet = self._money.wallet.pubkey()
            account = associated_token_address(wallet, mint, asset.token_program)
            if await ledger.account(account) is None:
                opening = create_ata_idempotent(wallet, wallet, mint, asset.token_program)
                await ledger.send(await self._signed([opening]))
                log.info("opened the provider's token account", extra={"account": str(account)})
        except LedgerError as exc:
            raise GatewayRefused(
                503, "unavailable", f"the {ledger.name} ledger cannot be used yet: {exc}", 5
            ) from exc
        return asset

    async def _mint(self, mint: Pubkey) -> Asset:
        known = self._mints.get(mint)
        if known is not None:
            return known
        account = await self._ledger.account(mint)
        info = read_mint(account.data) if account and account.owner in TOKEN_PROGRAMS else None
        if account is None or info is None:
            raise GatewayRefused(
                503,
                "unavailable",
                f"{mint} is not a token mint on the {self._ledger.name} ledger: set "
                "[gateway] asset to one (USDC on a cluster), or leave it empty on a local "
                "ledger for its test mint",
            )
        asset = self._mints[mint] = Asset(mint, info.decimals, account.owner)
        return asset

    async def _signed(self, instructions: list[Any]) -> Transaction:
        wallet = self._money.wallet
        message = Message(instructions, wallet.pubkey())
        return Transaction([wallet], message, await self._ledger.blockhash())

    def statistics(self) -> dict[str, int]:
        return {
            "settled": self.settled,
            "forwarded": self.forwarded,
            "paying": len(self._in_flight),
        }

    async def owed(self) -> int:
        """Royalties settled payments owe creators and no forward has paid yet."""
        return await self._store.run(book.owed, self._store.db)

    # -- prices ------------------------------------------------------------------

    async def agents(self) -> list[dict[str, Any]]:
        """What a buyer can run here now, with its x402 price."""
        asset = str((await self.asset()).mint)
        found = []
        for agent in self._tasks.serving:
            try:
                priced = await self.priced(agent)
            except GatewayRefused:
                continue  # not released yet, sold by plan, unusable
            listing, offer = priced.offer.listing, priced.offer
            req = priced.requirements
            found.append(
                {
                    "agent": agent,
                    "publisher": listing["publisher"],
                    "name": listing["name"],
                    "title": listing["title"],
                    "summary": listing["summary"],
                    "version": offer.release["version"],
                    "price": {
                        "amount": str(req.amount if req else 0),
                        "asset": asset,
                        "network": self.network,
                    },
                    "lamports": offer.price,
                    "royalty_bps": int(listing["royalty_bps"]),
                    "path": f"/x402/v2/run/{agent}",
                }
            )
        return found

    async def priced(self, agent: str, fresh: bool = False) -> Priced:
        """``agent``'s offer and requirements now (``fresh``: not from the short cache
        that 402 answers use). GatewayRefused: 404 if this node does not serve it,
        403 if it is sold by plan, 503 if it cannot be run now."""
        now = trio.current_time()
        cached = self._offers.get(agent)
        if cached is not None and not fresh and now - cached[0] < OFFER_TTL_S:
            return cached[1]
        try:
            offer = await self._tasks.offer_here(agent)
        except Refused as exc:
            raise _refusal(exc) from exc
        amount = math.ceil(offer.price * self._units)
        if amount and offer.timeout_s > MAX_PAID_RUN_S:
            raise GatewayRefused(
                403,
                "run_too_long",
                f"a run of {agent[:120]} may take {offer.timeout_s:g} s: a payment per call "
                f"is sent after the run and must land within its blockhash's life, so runs "
                f"sold here take at most {MAX_PAID_RUN_S:g} s; run it with mercato",
            )
        try:
            priced = Priced(offer, await self._requirements(amount) if amount else None)
        except ValueError as exc:  # ExactRequirements': over a u64 of base units
            raise GatewayRefused(
                503,
                "unavailable",
                f"{agent[:120]} costs {amount} base units, more than a token transfer can "
                "carry: its price or [gateway] units_per_lamport is too large",
            ) from exc
        if len(self._offers) > 4 * len(self._tasks.serving) + 16:
            self._offers.clear()
        self._offers[agent] = (now, priced)
        return priced

    async def _requirements(self, amount: int) -> ExactRequirements:
        asset = await self.asset()
        wallet = self._money.wallet.pubkey()
        return ExactRequirements(
            network=self.network,
            asset=asset.mint,
            amount=amount,
            pay_to=wallet,
            fee_payer=wallet,
            decimals=asset.decimals,
            token_program=asset.token_program,
            max_timeout_s=self.config.max_timeout_s,
        )

    async def accepts(self, priced: Priced) -> list[dict[str, Any]]:
        """The ``accepts`` of a 402 for ``priced`` (empty for a free agent)."""
        if priced.requirements is None:
            return []
        return [requirements_json(priced.requirements, await self._recent_blockhash())]

    async def _recent_blockhash(self) -> str:
        """A blockhash to offer clients, reused for ``BLOCKHASH_TTL_S`` (on the
        embedded ledger, which takes only its latest, always the latest)."""
        ledger = self._ledger
        if ledger.name == "embedded":
            return str(await ledger.blockhash())
        if trio.current_time() - self._blockhash[0] < BLOCKHASH_TTL_S:
            return self._blockhash[1]
        async with self._blockhash_lock:
            if trio.current_time() - self._blockhash[0] >= BLOCKHASH_TTL_S:
                try:
                    value = str(await ledger.blockhash())
                except LedgerError:
                    value = ""  # the client asks its RPC for one
                self._blockhash = (trio.current_time(), value)
            return self._blockhash[1]

    # -- a call ------------------------------------------------------------------

    async def call(self, agent: str, payment: str | None, stdin: bytes) -> Paid:
        """Run ``agent`` on ``stdin`` for the payment in ``payment`` (the
        ``PAYMENT-SIGNATURE`` header; None: none came), settled only if the run
        answered. GatewayRefused for every refusal (402 with its reason for a
        payment missing or wrong). A payment sent again whose first call ended
        before the ledger said gets that call's answer (see `_again`)."""
        payload = None
        if payment is not None:
            payload = decode_payment_signature(payment)
            try:
                key = payment_key(payload.transaction)
            except PaymentInvalid as exc:
                raise GatewayRefused(402, exc.reason, str(exc)) from exc
            kept = await self._store.run(book.stored, self._store.db, key)
            if kept is not None:
                return await self._again(agent, kept)
        priced = await self.priced(agent, fresh=payment is not None)
        req = priced.requirements
        if req is None:  # a free agent runs for anyone (within the rate limits)
            run = await self._run(priced.offer, stdin, user=FREE_USER, channel="", cumulative=0)
            if not run.result.ok:
                raise _failed(run)
            return Paid.of(run)
        if payload is None:
            raise GatewayRefused(402, PAYMENT_REQUIRED, "this agent is paid per call")
        if not accepted_matches(requirements_json(req), payload.accepted):
            raise GatewayRefused(
                402,
                NO_MATCHING_REQUIREMENTS,
                "the payment accepts other requirements than this node asks now (the "
                "price, asset, network, payTo or fee payer): pay what the 402 asks",
            )
        try:
            checked = check_exact_payment(payload.transaction, req)
        except PaymentInvalid as exc:
            raise GatewayRefused(402, exc.reason, str(exc)) from exc
        message, source = checked.message_hash, str(checked.source)
        if message in self._in_flight:
            raise _duplicate()
        if source in self._sources:
            raise GatewayRefused(
                429,
                PAYMENT_IN_FLIGHT,
                f"a payment from the token account {source} is in flight here: wait for "
                "its answer, then pay again",
                1,
            )
        # Checked and added with no await between: no two calls pass at once.
        self._in_flight.add(message)  # first: the forwarder leaves it alone
        self._sources.add(source)
        try:
            async with self._paying:
                return await self._settle_run(priced.offer, req, checked, stdin)
        finally:
            self._in_flight.discard(message)
            self._sources.discard(source)

    async def _settle_run(
        self, offer: LocalOffer, req: ExactRequirements, checked: CheckedPayment, stdin: bytes
    ) -> Paid:
        tx = cosign_payment(checked, self._money.wallet)
        signature, payer = str(tx.signatures[0]), str(checked.payer)
        creator = str(offer.listing["publisher"])
        royalty = 0
        if creator != self._money.address:  # the provider is the creator: all is its own
            royalty = req.amount * int(offer.listing["royalty_bps"]) // 10_000
        row = book.PaymentRow(
            checked.message_hash, signature, payer, offer.agent, str(req.asset), req.amount,
            creator, royalty, str(tx.message.recent_blockhash), created=time.time(),
        )  # fmt: skip
        if not await self._store.run(book.claim, self._store.db, row):
            raise _duplicate()
        keep = False
        try:
            await self._simulate(tx)
            run = await self._run(
                offer, stdin, user=f"x402:{payer}", channel=f"x402:{signature}",
                cumulative=req.amount,
            )  # fmt: skip
            if not run.result.ok:
                raise _failed(run)
            keep = True  # from here on the payment may land: never release it
            with trio.CancelScope(shield=True):
                if await self._submit(tx, row):
                    return Paid.of(run, signature, payer, req.amount)
                # Unknown: no output for a payment that may never land; the same
                # payment sent again gets it once the ledger shows it did.
                output, signed = run.result.output, run.signed
                await self._store.run(book.pending, self._store.db, row.message, output, signed)
            return Paid.pending(row)
        except GatewayRefused as exc:
            keep = keep and exc.reason != TRANSACTION_FAILED
            raise
        finally:
            if not keep:
                with trio.CancelScope(shield=True):
                    await self._store.run(book.release, self._store.db, row.message)

    async def _again(self, agent: str, kept: book.Stored) -> Paid:
        """A payment sent again whose first call ended before the ledger said whether
        it landed: that call's answer once the ledger shows it did (as often as it
        is asked), the x402 error once it is known never to have (the payment is
        then released), still 202 while the ledger cannot say."""
        row = kept.row
        if row.agent != agent:
            raise _duplicate()
        if row.status != "settled":
            if row.message in self._in_flight:  # being resolved by another request now
                return Paid.pending(row)
            self._in_flight.add(row.message)
            try:
                landed = await self._resolve(row)
            except LedgerUnreachable:
                landed = None
            finally:
                self._in_flight.discard(row.message)
            if landed is None:
                return Paid.pending(row)
            if not landed:
                raise GatewayRefused(
                    402,
                    TRANSACTION_FAILED,
                    "the payment never landed on the ledger (its blockhash expired first): "
                    "nothing was paid; pay again",
                )
        receipt = Receipt.verify(kept.receipt)
        return Paid(kept.output, receipt, kept.receipt, row.signature, row.payer, row.amount)

    async def _simulate(self, tx: VersionedTransaction) -> None:
        try:
            await self._ledger.simulate(tx)
        except BlockhashExpired as exc:
            raise GatewayRefused(
                402,
                SIMULATION_FAILED,
                "the payment's blockhash has expired: pay again with a fresh one "
                f"(a payment holds at most maxTimeoutSeconds, {self.config.max_timeout_s} s)",
            ) from exc
        except LedgerUnreachable as exc:
            raise GatewayRefused(
                503, "unavailable", f"the ledger does not answer: {exc}", 5
            ) from exc
        except LedgerError as exc:
            raise GatewayRefused(
                402, SIMULATION_FAILED, f"the payment would fail on the ledger: {exc}"
            ) from exc

    async def _run(
        self, offer: LocalOffer, stdin: bytes, *, user: str, channel: str, cumulative: int
    ) -> LocalRun:
        try:
            return await self._tasks.run_here(
                offer, stdin, user=user, channel=channel, cumulative=cumulative
            )
        except Refused as exc:
            raise _refusal(exc) from exc

    async def _submit(self, tx: VersionedTransaction, row: book.PaymentRow) -> bool:
        """Send the co-signed payment, again while the ledger does not answer, until
        it has it (True) or it is known never to land (GatewayRefused: the ledger
        refused it, or its blockhash expired without it), for at most
        ``settle_timeout``; False if the ledger still cannot say."""
        ledger = self._ledger
        why, landed = "no answer", False
        with trio.move_on_after(self.settle_timeout):
            while not landed:
                try:
                    await ledger.send(tx)
                    landed = True
                except LedgerUnreachable as exc:
                    why = str(exc)
                except LedgerError as exc:
                    try:  # a copy sent before may have landed all the same
                        landed = bool(await ledger.landed(row.signature))
                    except LedgerUnreachable as unreachable:
                        why = str(unreachable)
                    else:
                        if not landed:
                            raise GatewayRefused(
                                402, TRANSACTION_FAILED, f"the ledger refused the payment: {exc}"
                            ) from exc
                if not landed:
                    await trio.sleep(SEND_AGAIN_S)
        if landed:
            await self._settled(row)
            return True
        log.warning(
            "an x402 payment is not confirmed yet: its answer is kept for the buyer's retry",
            extra={"transaction": row.signature, "why": why},
        )
        return False

    async def _settled(self, row: book.PaymentRow) -> None:
        def record() -> None:
            book.mark(self._store.db, row.message, "settled")
            self._events.record(
                "gateway.settled",
                {
                    "agent": row.agent, "payer": row.payer, "amount": row.amount,
                    "asset": row.asset, "transaction": row.signature,
                    "creator": row.creator, "royalty": row.royalty,
                },
            )  # fmt: skip

        await self._store.run(record)
        self.settled += 1
        if self._metrics is not None:
            self._metrics.gateway_settled.labels(asset=row.asset).inc(row.amount)
        if row.royalty:
            self._wake.set()

    async def _resolve(self, row: book.PaymentRow) -> bool | None:
        """What became of a payment whose call ended (or crashed) before the ledger
        said: True if it landed (now settled), False if it never will (released:
        the same payment may be sent again), None while the ledger cannot say.
        LedgerUnreachable if the ledger does not answer."""
        landed, never = await self._fate(row.signature, row.blockhash, row.created)
        with trio.CancelScope(shield=True):
            if landed:
                await self._settled(row)
                return True
            if never:
                await self._store.run(book.release, self._store.db, row.message)
                return False
        return None

    async def _fate(self, signature: str, blockhash: str, created: float) -> tuple[bool, bool]:
        """Whether a transaction of this node landed, and whether it never will. The
        blockhash is asked first: once it expired, a signature the ledger has not
        seen never landed. Past ``CANNOT_LAND_AFTER_S``, a ledger that cannot say
        whether the blockhash expired is taken to mean it did. LedgerUnreachable
        if the ledger does not say whether it landed."""
        ledger = self._ledger
        expired = await ledger.blockhash_expired(Hash.from_string(blockhash))
        if expired is None:
            expired = time.time() - created > CANNOT_LAND_AFTER_S
        landed = await ledger.landed(signature)
        return bool(landed), landed is False or (landed is None and expired)

    # -- royalties and unconfirmed payments -----------------------------------------

    async def _forward_due(self) -> None:
        """Settle what the ledger has confirmed since, then forward what creators are owed."""
        async with self._forwarding:
            await self._forward_round()

    async def _forward_round(self) -> None:
        db = self._store.db
        for forward in await self._store.run(book.sending, db):
            try:
                landed, never = await self._fate(
                    forward.signature, forward.blockhash, forward.created
                )
            except LedgerUnreachable as exc:  # it stays under way: never sent twice
                log.info("a royalty forward's fate is not known yet", extra={"why": str(exc)})
                continue
            if landed:
                await self._store.run(book.forward_paid, db, forward.signature)
            elif never:
                await self._store.run(book.forward_dropped, db, forward.signature)
        for row in await self._store.run(book.unresolved, db):
            if row.message in self._in_flight:
                continue
            self._in_flight.add(row.message)
            try:
                await self._resolve(row)
            except LedgerUnreachable as exc:  # it stays: never released while it may land
                log.info("an x402 payment's fate is not known yet", extra={"why": str(exc)})
            finally:
                self._in_flight.discard(row.message)
        for due in await self._store.run(book.due, db):
            await self._forward(due)

    async def _forward(self, due: book.Due) -> None:
        """One transfer of what ``due.creator`` is owed, stored before it is sent."""
        asset = await self._mint(Pubkey.from_string(due.asset))
        wallet = self._money.wallet.pubkey()
        creator = Pubkey.from_string(due.creator)
        program = asset.token_program
        # The memo makes each forward its own transaction: two of the same amount to
        # the same creator on one blockhash would otherwise be one and the same.
        nonce = f"mercato royalty {secrets.token_hex(8)}".encode()
        tx = await self._signed(
            [
                create_ata_idempotent(wallet, creator, asset.mint, program),
                Instruction(MEMO_PROGRAM, nonce, []),
                transfer_checked(
                    associated_token_address(wallet, asset.mint, program),
                    asset.mint,
                    associated_token_address(creator, asset.mint, program),
                    wallet,
                    due.amount,
                    asset.decimals,
                    program,
                ),
            ]
        )
        forward = book.ForwardRow(
            str(tx.signatures[0]), due.creator, due.asset, due.amount,
            str(tx.message.recent_blockhash),
        )  # fmt: skip
        db, now = self._store.db, time.time()
        await self._store.run(book.start_forward, db, forward, due.payments, now)
        try:
            await self._ledger.send(tx)
        except LedgerError as exc:  # the next round asks the ledger what became of it
            log.warning(
                "a royalty forward did not land yet",
                extra={"creator": due.creator, "amount": due.amount, "why": str(exc)},
            )
            return
        await self._store.run(book.forward_paid, self._store.db, forward.signature)
        await self._store.run(
            self._events.record,
            "gateway.forwarded",
            {"creator": due.creator, "asset": due.asset, "amount": due.amount,
             "transaction": forward.signature, "payments": len(due.payments)},
        )  # fmt: skip
        self.forwarded += 1


def _refusal(exc: Refused) -> GatewayRefused:
    """A provider's refusal as the gateway's answer."""
    if exc.code in ("not_served", "unknown_agent"):
        return GatewayRefused(404, "not_found", str(exc))
    if exc.code in ("licence_required", "licence_refused", "not_covered"):
        return GatewayRefused(403, "licence_required", str(exc))
    if exc.code == "input_too_large":
        return GatewayRefused(413, "input_too_large", str(exc))
    return GatewayRefused(503, exc.code, str(exc), 5)


def _duplicate() -> GatewayRefused:
    return GatewayRefused(
        402, DUPLICATE, "this payment was taken before: a new call needs a new payment"
    )


def _failed(run: LocalRun) -> GatewayRefused:
    result = run.result
    detail = f": {result.detail}" if result.detail else ""
    return GatewayRefused(
        422,
        "run_failed",
        f"the agent's run ended with {result.outcome.value}{detail}; nothing was paid",
        run=run,
    )
