"""`CommerceService`: licences and subscriptions bought, sold and refunded.

The creator's node is the shop: it answers ``/mercato/sale/1.0.0`` for each
account key it holds (announced in the DHT as ``seller:<address>`` once the
account has a listing with plans), offers
the terms of a plan, checks that a buyer's purchase is exactly those terms,
co-signs it and submits it; later it refunds within the plan's window by
paying the price back and burning the token as its permanent delegate. The
buyer's node finds the creator's node, builds and signs its part of the
purchase, and records what it bought. While the creator's node is offline
nothing can be sold or refunded (only its key can mint), but every licence
already sold keeps working: providers read the ledger, not the creator.

Nothing paid goes unrecorded: both sides write a purchase's row (``pending``
on the buyer's side) before its transaction can land, and the buyer's node
settles pending rows against the ledger at start and before it lists them
(`settle_pending`): on the ledger, the licence is held; known never to land, the
row goes. Cancellation mid-purchase leaves such a pending row, nothing else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

import trio
from solders.hash import Hash
from solders.keypair import Keypair as SolanaKeypair
from solders.pubkey import Pubkey
from solders.transaction import Transaction

from mercato.crdt import Query
from mercato.p2p import P2PError, Refused, RemoteError
from mercato.settlement import (
    LedgerError,
    LedgerUnreachable,
    LicenceError,
    LicenceTerms,
    check_purchase,
    cosign_purchase,
    licence_account,
    licence_mint,
    mint_size,
    new_seed,
    purchase_transaction,
    read_licence,
    revoke_transaction,
)

from ._entitlements import Entitlements
from ._errors import BadSignedObject, CommerceError, NoSeller, SaleRefused, UnknownLicence
from ._messages import OFFER_TTL_S, SALE, Offer, RefundAsk, SaleRequest, SaleResponse
from ._store import LicenceBook, LicenceRow, SalesBook

if TYPE_CHECKING:
    from mercato.p2p import Overlay

    from .._events import EventLog
    from .._keys import KeyStore
    from .._store import Store
    from ..money import SettlementService
    from ..registry import RegistryService

log = logging.getLogger("mercato.commerce")
ANNOUNCE_EVERY_S = 600.0
ANNOUNCE_RETRY_S = 1.0
ANNOUNCE_CHECK_S = 2.0  # how often this node looks for accounts that started selling
OFFER_SKEW_S = 600  # how far the creator's clock may be behind this node's
FEE_ALLOWANCE = 20_000  # lamports: the purchase's fee (two signatures), with room


def _buyer_of(req: SaleRequest) -> Pubkey:
    try:
        return Pubkey.from_string(req.buyer)
    except ValueError as exc:
        raise Refused("bad_request", "the buyer is not a Solana address") from exc


class CommerceService:
    """Sales for this node's creators; purchases and refunds for its wallet."""

    def __init__(
        self,
        store: Store,
        keys: KeyStore,
        events: EventLog,
        overlay: Overlay,
        registry: RegistryService,
        money: SettlementService,
    ) -> None:
        self._store = store
        self._keys = keys
        self._events = events
        self._overlay = overlay
        self._registry = registry
        self._money = money
        self.held = LicenceBook(store)
        self.sold = SalesBook(store)
        self.entitlements = Entitlements(money.ledger, overlay.peer_id)
        self._selling: set[str] = set()  # mints whose purchase is being submitted
        self._buying: set[str] = set()  # mints this node's purchases are waiting on
        self._sellers: dict[str, str] = {}  # publisher -> the peer that sold last

    # -- the service ---------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Answer sale requests and announce this node as the seller of its accounts,
        until cancelled."""
        self._overlay.requests.serve(SALE, self._answer)
        task_status.started()
        await self.settle_pending()
        due: dict[str, float] = {}  # address -> when to announce it next
        retry: dict[str, float] = {}
        while True:  # a listing with plans may be published at any time: look often
            for address in await self._selling_accounts():
                if trio.current_time() >= due.get(address, 0.0):
                    await self._announce(address, due, retry)
            await trio.sleep(ANNOUNCE_CHECK_S)

    async def _announce(self, address: str, due: dict[str, float], retry: dict[str, float]) -> None:
        """A provider record for ``address``; when no one takes it yet, back off."""
        try:
            await self._overlay.dht.provide(f"seller:{address}")
            due[address], retry[address] = trio.current_time() + ANNOUNCE_EVERY_S, 0.0
        except P2PError:
            wait = min(max(retry.get(address, 0.0) * 2, ANNOUNCE_RETRY_S), 60.0)
            due[address], retry[address] = trio.current_time() + wait, wait

    async def _selling_accounts(self) -> list[str]:
        """This node's accounts with a listing that has plans."""
        selling = []
        for address in await self._accounts():
            page = await self._registry.search(Query(publisher=address, limit=100))
            if any(r.get("plans") and not r.get("deprecated") for r in page["results"]):
                selling.append(address)
        return selling

    async def _accounts(self) -> dict[str, str]:
        """This node's account keys: address -> name."""
        infos = await self._store.run(self._keys.list_keys)
        return {k.address: k.name for k in infos if k.kind == "account"}

    async def _account_key(self, address: str) -> SolanaKeypair | None:
        name = (await self._accounts()).get(address)
        if name is None:
            return None
        account = await self._store.run(self._keys.account, name)
        return SolanaKeypair.from_seed(account.seed)

    # -- the creator's side --------------------------------------------------------

    async def _answer(self, peer: str, req: SaleRequest) -> SaleResponse:
        if req.op == "offer":
            return await self._offer(req)
        if req.op == "buy":
            return await self._sell(req)
        if req.op == "refund":
            return await self._refund(req)
        raise Refused("bad_request", f"unknown op {req.op!r}: offer, buy or refund")

    async def _plan(self, agent: str, plan: str) -> tuple[dict[str, Any], dict[str, Any]]:
        publisher, _, name = agent.partition("/")
        listing = await self._registry.show(publisher, name) if publisher and name else None
        if listing is None or listing.get("deprecated"):
            raise Refused("unknown_agent", f"no listing {agent[:120]} is for sale here")
        plans = listing.get("plans") or {}
        if plan not in plans:
            known = ", ".join(sorted(plans)) or "none"
            raise Refused("no_such_plan", f"{agent} has no plan {plan[:32]!r} (plans: {known})")
        return listing, plans[plan]

    async def _terms(self, agent: str, plan_name: str, buyer: Pubkey) -> LicenceTerms:
        listing, plan = await self._plan(agent, plan_name)
        now = int(time.time())
        expires = 0
        if plan["kind"] == "subscription":  # a renewal starts where the last period ends
            start = max(now, await self.sold.latest_expiry(agent, plan_name, str(buyer)))
            expires = start + int(plan["period_days"]) * 86_400
        return LicenceTerms(
            listing=agent,
            plan=plan_name,
            versions=plan["versions"],
            expires=expires,
            refund_until=now + int(plan["refund_days"]) * 86_400 if plan["refund_days"] else 0,
            transferable=bool(plan["transferable"]),
            price=int(plan["price"]),
            buyer=buyer,
            creator=Pubkey.from_string(listing["publisher"]),
        )

    async def _offer(self, req: SaleRequest) -> SaleResponse:
        publisher = req.agent.partition("/")[0]
        creator = await self._account_key(publisher)
        if creator is None:
            raise Refused("not_seller", f"this node does not hold the key of {publisher[:44]}")
        buyer = _buyer_of(req)
        if str(buyer) == publisher:
            raise Refused("bad_request", "a creator cannot buy its own listing")
        terms = await self._terms(req.agent, req.plan, buyer)
        return SaleResponse(offer=Offer(terms, int(time.time()) + OFFER_TTL_S).sign(creator))

    async def _sell(self, req: SaleRequest) -> SaleResponse:
        try:
            offer = Offer.verify(req.offer)
        except BadSignedObject as exc:
            raise Refused("bad_offer", str(exc)) from exc
        terms = offer.terms
        creator = await self._account_key(str(terms.creator))
        if creator is None:
            raise Refused("bad_offer", "that offer is not from an account of this node")
        if offer.until < time.time():
            raise Refused("offer_expired", "the offer has expired: ask for a new one")
        _, plan = await self._plan(terms.listing, terms.plan)
        if int(plan["price"]) != terms.price:
            raise Refused("price_changed", f"the plan now costs {plan['price']} lamports")
        rent = await self._money.ledger.rent(mint_size(terms))
        try:
            tx, mint = check_purchase(terms, rent, req.transaction)
        except LicenceError as exc:
            raise Refused("bad_purchase", str(exc)) from exc
        key = str(mint)
        if key in self._selling:
            raise Refused("already_sold", f"the licence {key} is being sold already")
        self._selling.add(key)  # before any await: a concurrent replay sees it
        try:
            if await self.sold.get(key) is not None:
                raise Refused("already_sold", f"the licence {key} was sold already")
            signature = await self._submit(terms, cosign_purchase(tx, creator), key)
        finally:
            self._selling.discard(key)
        return SaleResponse(signature=signature)

    async def _submit(self, terms: LicenceTerms, tx: Any, mint: str) -> str:
        """Record the sale, then land it; the row goes again if the ledger refuses."""
        try:
            await self._money.ledger.simulate(tx)
        except LedgerError as exc:
            raise Refused(
                "cannot_pay",
                f"the purchase would fail on the ledger ({exc}): the buyer's wallet may "
                "lack the price, the rent and the fee",
            ) from exc
        row = _row(terms, mint, str(terms.buyer), tx)
        await self.sold.add(dataclasses.replace(row, pending=1))
        try:
            signature = await self._money.ledger.send(tx)
        except LedgerUnreachable as exc:  # it may still land: the row stays pending
            raise Refused("ledger_unreachable", f"the purchase may still land: {exc}") from exc
        except LedgerError as exc:
            await self.sold.remove(mint)
            raise Refused("ledger_refused", f"the ledger refused the purchase: {exc}") from exc
        await self.sold.landed(mint, row.signature)
        await self._record("commerce.sold", row)
        log.info("licence sold", extra={"agent": terms.listing, "plan": terms.plan, "mint": mint})
        return signature

    async def _refund(self, req: SaleRequest) -> SaleResponse:
        try:
            ask = RefundAsk.verify(req.refund)
        except BadSignedObject as exc:
            raise Refused("bad_refund", str(exc)) from exc
        sale = await self.sold.get(ask.mint)
        if sale is None:
            raise Refused("unknown_licence", f"this node sold no licence {ask.mint}")
        if sale.party != ask.buyer:
            raise Refused("not_buyer", "only the licence's buyer may ask for its refund")
        if sale.refunded:
            raise Refused("already_refunded", f"the licence was refunded by {sale.refunded}")
        if not sale.refund_until:
            raise Refused("no_refunds", f"the plan {sale.plan} of {sale.agent} has no refunds")
        if time.time() > sale.refund_until:
            ended = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(sale.refund_until))
            raise Refused("refund_window_over", f"the refund window ended on {ended}")
        if sale.pending:
            raise Refused("not_landed", "that sale is not on the ledger yet: ask again later")
        # A renewal runs from the moment it is bought: refunding the period before it
        # would leave the buyer both periods for one price. Newest period first.
        latest = await self.sold.latest_expiry(sale.agent, sale.plan, sale.party)
        if sale.kind == "subscription" and latest > sale.expires:
            raise Refused(
                "refund_newest_first",
                "a later period of this subscription was bought: refund that one first",
            )
        creator = await self._account_key(sale.agent.partition("/")[0])
        if creator is None:
            raise Refused("not_seller", "this node no longer holds the creator's key")
        signature = await self._revoke(sale, creator)
        return SaleResponse(signature=signature)

    async def _revoke(self, sale: LicenceRow, creator: SolanaKeypair) -> str:
        ledger = self._money.ledger
        mint, buyer = Pubkey.from_string(sale.mint), Pubkey.from_string(sale.party)
        try:
            licence = read_licence(
                mint,
                await ledger.account(mint),
                buyer,
                await ledger.account(licence_account(buyer, mint)),
            )
        except LicenceError as exc:
            raise Refused("cannot_refund", f"the licence cannot be revoked: {exc}") from exc
        if licence.amount < 1:
            raise Refused("cannot_refund", "the buyer no longer holds the licence")
        tx = revoke_transaction(licence, creator, sale.price, await ledger.blockhash())
        signature = str(tx.signatures[0])
        await self.sold.refunded(sale.mint, signature)  # before it can land
        try:
            await ledger.send(tx)
        except LedgerUnreachable as exc:  # it may still land: providers read the ledger
            raise Refused("ledger_unreachable", f"the refund may still land: {exc}") from exc
        except LedgerError as exc:
            await self.sold.refunded(sale.mint, "")
            raise Refused("ledger_refused", f"the ledger refused the refund: {exc}") from exc
        self.entitlements.forget(sale.mint)
        await self._record("commerce.refunded", sale)
        log.info("licence refunded", extra={"agent": sale.agent, "mint": sale.mint})
        return signature

    # -- the buyer's side ----------------------------------------------------------

    async def buy(self, agent: str, plan: str, max_price: int | None = None) -> LicenceRow:
        """Buy ``plan`` of ``agent`` from its creator's node, for at most ``max_price``
        lamports; the licence once it is on the ledger. SaleRefused, NoSeller or
        CommerceError say why not."""
        publisher, _, name = agent.partition("/")
        listing = await self._registry.show(publisher, name) if publisher and name else None
        if listing is None:
            raise CommerceError(
                f"this node's registry has no listing {agent}: check `mercato search`"
            )
        plans = listing.get("plans") or {}
        if plan not in plans:
            known = ", ".join(sorted(plans)) or "it sells runs only"
            raise CommerceError(f"{agent} has no plan {plan!r} (plans: {known})")
        wallet = self._money.wallet
        if str(wallet.pubkey()) == publisher:
            raise CommerceError(
                "this node's wallet is the listing's creator: it cannot buy from itself"
            )
        price = int(plans[plan]["price"])
        if max_price is not None and price > max_price:
            raise CommerceError(f"the plan {plan} now costs {price} lamports, over {max_price}")
        await self._can_afford(price)
        peer, offer_bytes, offer = await self._offer_from(publisher, agent, plan, plans[plan])
        seed = new_seed()
        mint = licence_mint(offer.terms.creator, seed)
        ledger = self._money.ledger
        rent = await ledger.rent(mint_size(offer.terms))
        tx = purchase_transaction(offer.terms, wallet, seed, rent, await ledger.blockhash())
        req = SaleRequest(op="buy", offer=offer_bytes, transaction=tx)
        row = _row(offer.terms, str(mint), publisher, Transaction.from_bytes(tx))
        await self.held.add(dataclasses.replace(row, pending=1))  # before it can land
        self._buying.add(row.mint)
        try:
            await self._overlay.requests.request(peer, SALE, req)
        except RemoteError as exc:
            # Whoever answered may have passed the purchase on all the same: only the
            # ledger says whether it landed.
            if not await self._settle_one(row):
                raise SaleRefused(exc.code, f"the creator's node refused: {exc.message}") from exc
        except P2PError as exc:
            await self._landed_anyway(row, exc)
        finally:
            self._buying.discard(row.mint)
        await self.held.landed(row.mint, row.signature)
        await self._record("commerce.bought", row)
        return row

    async def _can_afford(self, price: int) -> None:
        ledger, me = self._money.ledger, self._money.wallet.pubkey()
        need = price + await ledger.rent(400) + FEE_ALLOWANCE
        have = await ledger.balance(me)
        if have < need:
            raise CommerceError(
                f"the wallet {me} holds {have} lamports; this purchase needs about {need} "
                "(the price, the licence's rent and the fee): fund it first"
            )

    async def _landed_anyway(self, row: LicenceRow, exc: P2PError) -> None:
        """After a lost answer: return if the purchase landed all the same; else
        settle the pending row as far as the ledger can tell, and raise NoSeller."""
        if await self._settle_one(row):
            return
        if await self.held.get(row.mint) is not None:
            raise NoSeller(
                f"the creator's node did not answer ({exc}); the purchase may still land: "
                "`mercato licences` shows it as pending until the ledger says"
            ) from exc
        raise NoSeller(f"the creator's node did not answer ({exc}); nothing was bought") from exc

    async def settle_pending(self) -> None:
        """Settle every pending purchase against the ledger (see the module docstring)."""
        for row in await self.held.pending():
            if row.mint not in self._buying:  # a purchase in flight settles itself
                await self._settle_one(row)

    async def _settle_one(self, row: LicenceRow) -> bool:
        """True once ``row``'s purchase is on the ledger (then recorded as held);
        the row goes once its blockhash expired without it."""
        ledger = self._money.ledger
        try:
            if await ledger.account(Pubkey.from_string(row.mint)) is not None:
                await self.held.landed(row.mint, row.signature)
                return True
            if await ledger.blockhash_expired(Hash.from_string(row.blockhash)) is True:
                await self.held.remove(row.mint)
        except LedgerError as exc:
            log.info("a pending purchase stays pending", extra={"mint": row.mint, "why": str(exc)})
        return False

    async def _offer_from(
        self, publisher: str, agent: str, plan: str, listed: dict[str, Any]
    ) -> tuple[str, bytes, Offer]:
        """The creator's node and its offer, checked against the plan as this node
        knows it. Every node announced as the seller is tried (a record in the DHT
        proves nothing); SaleRefused with the first refusal if none offers."""
        me = str(self._money.wallet.pubkey())
        req = SaleRequest(op="offer", agent=agent, plan=plan, buyer=me)
        errors: list[str] = []
        refusal: RemoteError | None = None
        for peer in await self._seller_peers(publisher):
            try:
                answer = await self._overlay.requests.request(peer, SALE, req)
                offer = Offer.verify(answer.offer)
                _check_offer(offer.terms, agent, plan, me, publisher, listed)
            except RemoteError as exc:
                refusal = refusal or exc
                errors.append(f"{peer}: {exc}")
                continue
            except (P2PError, CommerceError) as exc:
                errors.append(f"{peer}: {exc}")
                continue
            self._sellers[publisher] = peer
            return peer, answer.offer, offer
        if refusal is not None:
            raise SaleRefused(refusal.code, f"the creator's node refused: {refusal.message}")
        why = "; ".join(errors) or "no node announces itself as its seller"
        raise NoSeller(
            f"the creator's node for {agent} cannot be reached ({why}). Only it can issue a "
            "licence: try again when it is online"
        )

    async def _seller_peers(self, publisher: str) -> list[str]:
        peers = [self._sellers[publisher]] if publisher in self._sellers else []
        with contextlib.suppress(P2PError):
            for found in await self._overlay.dht.find_providers(f"seller:{publisher}", 5):
                if found.peer_id not in peers and found.peer_id != self._overlay.peer_id:
                    await self._reach(found.peer_id, list(found.addrs))
                    peers.append(found.peer_id)
        return peers

    async def _reach(self, peer: str, addrs: list[str]) -> None:
        host = self._overlay.host
        if peer in host.connected_peers():
            return
        for addr in addrs[:3]:
            with contextlib.suppress(P2PError):
                await host.connect(addr if "/p2p/" in addr else f"{addr}/p2p/{peer}")
                return

    async def refund(self, mint: str) -> LicenceRow:
        """Ask the creator's node to refund the licence ``mint`` this node bought."""
        row = await self.held.get(mint)
        if row is None:
            raise UnknownLicence(f"this node bought no licence {mint}: see `mercato licences`")
        if row.refunded:
            raise CommerceError(f"the licence {mint} was refunded already ({row.refunded})")
        wallet = self._money.wallet
        ask = RefundAsk(mint, str(wallet.pubkey()), int(time.time())).sign(wallet)
        req = SaleRequest(op="refund", refund=ask)
        errors: list[str] = []
        refusal: RemoteError | None = None
        for peer in await self._seller_peers(row.party):
            try:
                answer = await self._overlay.requests.request(peer, SALE, req)
            except RemoteError as exc:
                refusal = refusal or exc  # perhaps not the creator's node: ask the next
                continue
            except P2PError as exc:
                errors.append(str(exc))
                continue
            await self.held.refunded(mint, answer.signature)
            await self._record("commerce.refund_received", row)
            refreshed = await self.held.get(mint)
            assert refreshed is not None, "the row was there a moment ago"
            return refreshed
        if refusal is not None:
            if refusal.code == "already_refunded":  # an earlier answer was lost on the way
                await self.held.refunded(mint, refusal.message.rpartition(" ")[2])
            raise SaleRefused(refusal.code, f"the creator's node refused: {refusal.message}")
        raise NoSeller(
            f"the creator's node cannot be reached ({'; '.join(errors) or 'none announced'}); "
            "only it can refund: try again when it is online"
        )

    async def _record(self, kind: str, row: LicenceRow) -> None:
        data = {"mint": row.mint, "agent": row.agent, "plan": row.plan, "price": row.price}
        await self._store.run(self._events.record, kind, data)


def _check_offer(
    t: LicenceTerms, agent: str, plan: str, me: str, publisher: str, listed: dict[str, Any]
) -> None:
    """CommerceError unless the offer sells exactly the plan this node's registry
    shows: price, versions, transferability, period and refund window."""
    wanted = (agent, plan, me, publisher, int(listed["price"]), listed["versions"])
    if (t.listing, t.plan, str(t.buyer), str(t.creator), t.price, t.versions) != wanted:
        raise CommerceError("its offer differs from the listing (price, versions or parties)")
    if t.transferable != bool(listed["transferable"]):
        raise CommerceError("its offer differs from the plan on transferability")
    now = time.time()
    if listed["kind"] == "licence" and t.expires != 0:
        raise CommerceError("its offer of a licence expires")
    period = int(listed["period_days"]) * 86_400
    if listed["kind"] == "subscription" and t.expires < now + period - OFFER_SKEW_S:
        raise CommerceError("its offer of a subscription is shorter than the plan's period")
    refunds = int(listed["refund_days"]) * 86_400
    if refunds and t.refund_until < now + refunds - OFFER_SKEW_S:
        raise CommerceError("its offer's refund window is shorter than the plan's")


def _row(terms: LicenceTerms, mint: str, party: str, tx: Transaction) -> LicenceRow:
    """The row of a purchase; its signature is the fee payer's, the buyer's."""
    kind = "subscription" if terms.expires else "licence"
    return LicenceRow(
        mint, terms.listing, terms.plan, kind, terms.versions, terms.expires,
        terms.refund_until, terms.price, party, str(tx.signatures[0]), time.time(),
        blockhash=str(tx.message.recent_blockhash),
    )  # fmt: skip
