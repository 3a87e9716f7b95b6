"""Licences and subscriptions between real nodes on one shared embedded ledger:
bought from the creator's node, enforced by a provider, upgraded, refunded."""

import json
import time
from pathlib import Path

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.transaction import Transaction

from mercato.node.commerce import (
    CommerceError,
    LicenceRequired,
    LicenceRow,
    LicenceUse,
    SaleRefused,
)
from mercato.node.commerce import _entitlements as entitlements_module
from mercato.node.commerce import _messages as messages_module
from mercato.node.commerce import _service as service_module
from mercato.node.commerce._messages import SALE, Offer, SaleRequest
from mercato.node.tasks._messages import TASK, Quote, TaskRequest
from mercato.p2p import RemoteError
from mercato.settlement import (
    licence_account,
    licence_mint,
    mint_size,
    new_seed,
    open_embedded_ledger,
    purchase_transaction,
    read_licence,
)

from .test_registry_network import running_nodes
from .test_tasks import EXAMPLES, LISTING, until

pytestmark = pytest.mark.slow
PRO = 50_000_000
PRO2 = 80_000_000
MONTHLY = 10_000_000
DAY = 86_400
PLANS = {
    "pro": {"kind": "licence", "price": PRO, "versions": "^1", "run_price": 0, "refund_days": 14},
    "pro2": {"kind": "licence", "price": PRO2, "versions": "^2", "run_price": 0},
    "monthly": {"kind": "subscription", "price": MONTHLY, "period_days": 30, "run_price": 0},
    "weekly": {"kind": "subscription", "price": MONTHLY, "period_days": 7, "refund_days": 7},
}


class Shifted:
    """The clock of a node days from now: a stand-in for time passing, which a test
    cannot wait for (a fake, named as one)."""

    def __init__(self, days: float) -> None:
        self.offset = days * DAY

    def time(self) -> float:
        return time.time() + self.offset

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


async def _quote(user, provider, agent: str, use: bytes, version: str = "*") -> Quote:
    asked = TaskRequest(op="quote", agent=agent, version=version, input_size=3, licence=use)
    answer = await user.overlay.requests.request(provider.overlay.peer_id, TASK, asked)
    return Quote.verify(answer.quote)


def _use(user, provider, mint: str, key: Keypair | None = None) -> bytes:
    key = key or user.settlement.wallet
    use = LicenceUse(mint, str(key.pubkey()), provider.overlay.peer_id, user.overlay.peer_id)
    return use.sign(key)


async def test_a_licence_is_bought_enforced_upgraded_and_refunded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = {"heartbeat_s": 0.5, "card_ttl_s": 5.0}
    async with (
        open_embedded_ledger(tmp_path / "shared-ledger.db") as ledger,
        running_nodes(tmp_path, 3, serve=fast, ledger=ledger, repair_interval_s=1.0) as nodes,
    ):
        creator, provider, user = nodes
        for i, a in enumerate(nodes):
            for b in nodes[i + 1 :]:
                await a.overlay.host.connect(b.overlay.host.listen_addrs()[0])
        listing = {**LISTING, "name": "wcpro", "price": 1000, "plans": PLANS}
        publisher = (await creator.registry.publish("default", listing))["publisher"]
        wasm = EXAMPLES / "wordcount" / "wordcount.wasm"
        for version in ("1.0.0", "1.1.0", "2.0.0"):
            release = {"name": "wcpro", "version": version}
            await creator.api.registry.release("default", release, wasm)
        agent = f"{publisher}/wcpro"
        provider.tasks.serve_agents((agent,))

        async def ready() -> bool:
            shown = [await n.registry.show(publisher, "wcpro") for n in (provider, user)]
            sellers = await user.overlay.dht.find_providers(f"seller:{publisher}")
            return all(s and len(s["releases"]) == 3 for s in shown) and bool(
                user.tasks.providers(agent) and sellers
            )

        await until(ready, 30, "the releases, the provider's card and the seller record")
        creator_key = Pubkey.from_string(publisher)
        buyer_key = user.settlement.wallet.pubkey()

        # Without a licence: the user's node says how to buy one, and the provider
        # refuses a quote outright.
        with pytest.raises(LicenceRequired, match="mercato buy"):
            await user.tasks.run_task(agent, "*", b"a b")
        with pytest.raises(RemoteError) as refused:
            await _quote(user, provider, agent, b"")
        assert refused.value.code == "licence_required"

        # Buying: one transaction pays the creator exactly the plan's price.
        before = await ledger.balance(creator_key)
        bought = await user.commerce.buy(agent, "pro")
        assert await ledger.balance(creator_key) == before + PRO
        assert (bought.plan, bought.versions, bought.expires) == ("pro", "^1", 0)
        mint = Pubkey.from_string(bought.mint)
        licence = read_licence(
            mint,
            await ledger.account(mint),
            buyer_key,
            await ledger.account(licence_account(buyer_key, mint)),
        )
        assert (licence.listing, licence.plan, licence.buyer, licence.amount) == (
            agent,
            "pro",
            buyer_key,
            1,
        )
        assert [r.mint for r in await creator.commerce.sold.all()] == [bought.mint]

        # Under the licence: the newest release it covers runs, and the newer major
        # shows as an upgrade with its plan's price.
        done = await user.tasks.run_task(agent, "*", b"three words here")
        assert json.loads(done["output"])["words"] == 3
        assert done["receipt"].version == "1.1.0" and done["licence"] == bought.mint
        assert done["upgrade"] == {  # the plans that cover 2.0.0
            "version": "2.0.0",
            "plans": [
                {"name": "monthly", "kind": "subscription", "price": MONTHLY, "versions": "*"},
                {"name": "pro2", "kind": "licence", "price": PRO2, "versions": "^2"},
                {"name": "weekly", "kind": "subscription", "price": MONTHLY, "versions": "*"},
            ],
        }
        resolved = (await user.api.registry.resolve(agent, "*")).model_dump()
        assert resolved["candidates"] == ["1.1.0"] and resolved["licence"] == bought.mint
        assert resolved["upgrade"]["version"] == "2.0.0"
        unlicensed = (await provider.api.registry.resolve(agent, "*")).model_dump()
        assert unlicensed["licence"] == "" and "mercato buy" in unlicensed["licence_required"]
        with pytest.raises(LicenceRequired, match="pro2"):
            await user.tasks.run_task(agent, "^2", b"a")
        with pytest.raises(RemoteError) as outside:
            await _quote(user, provider, agent, _use(user, provider, bought.mint), "^2")
        assert outside.value.code == "not_covered"

        # Forgeries: someone else's word for this licence, a word for another
        # provider, and a licence the creator never issued.
        stranger = Keypair()
        for forged in (
            _use(user, provider, bought.mint, key=stranger),
            LicenceUse(
                bought.mint, str(buyer_key), user.overlay.peer_id, user.overlay.peer_id
            ).sign(user.settlement.wallet),
            _use(user, provider, str(Keypair().pubkey())),
        ):
            with pytest.raises(RemoteError) as forged_refused:
                await _quote(user, provider, agent, forged)
            assert forged_refused.value.code == "licence_refused"

        # The creator's node refuses a purchase at another price, a replay, a plan
        # that does not exist and a buyer who cannot pay; none changes anything.
        seller = creator.overlay.peer_id
        ask = SaleRequest(op="offer", agent=agent, plan="pro", buyer=str(buyer_key))
        offer_bytes = (await user.overlay.requests.request(seller, SALE, ask)).offer
        terms = Offer.verify(offer_bytes).terms
        rent = await ledger.rent(mint_size(terms))
        seed = new_seed()
        cheap = purchase_transaction(
            type(terms)(**{**terms.__dict__, "price": PRO // 10}),
            user.settlement.wallet, seed, rent, await ledger.blockhash(),
        )  # fmt: skip
        balances = (await ledger.balance(creator_key), await ledger.balance(buyer_key))
        with pytest.raises(RemoteError) as short:
            await user.overlay.requests.request(
                seller, SALE, SaleRequest(op="buy", offer=offer_bytes, transaction=cheap)
            )
        assert short.value.code == "bad_purchase"
        bought_before = len(await creator.commerce.sold.all())
        replay_tx = purchase_transaction(
            terms, user.settlement.wallet, seed, rent, await ledger.blockhash()
        )
        replay = SaleRequest(op="buy", offer=offer_bytes, transaction=replay_tx)
        await user.overlay.requests.request(seller, SALE, replay)  # the first one lands
        with pytest.raises(RemoteError) as again:
            await user.overlay.requests.request(seller, SALE, replay)
        assert again.value.code == "already_sold"
        assert len(await creator.commerce.sold.all()) == bought_before + 1
        assert await ledger.balance(creator_key) == balances[0] + PRO
        # A purchase whose answer this node never got (it stopped, say) stays
        # pending until the ledger says: held if it landed, gone if it never did.
        landed_mint = str(licence_mint(terms.creator, seed))
        unsent_seed = new_seed()
        unsent = Transaction.from_bytes(
            purchase_transaction(terms, user.settlement.wallet, unsent_seed, rent,
                                 await ledger.blockhash())
        )  # fmt: skip
        unsent_mint = str(licence_mint(terms.creator, unsent_seed))
        for mint_text, tx in (
            (landed_mint, Transaction.from_bytes(replay_tx)),
            (unsent_mint, unsent),
        ):
            await user.commerce.held.add(
                LicenceRow(mint_text, agent, "pro", "licence", "^1", 0, 0, PRO, publisher,
                           str(tx.signatures[0]), time.time(), "", 1,
                           str(tx.message.recent_blockhash))
            )  # fmt: skip
        listed = (await user.api.commerce.licences()).licences
        settled = {x.mint: x.state for x in listed}
        # Its blockhash still holds: the unsent one may land yet.
        assert (settled[landed_mint], settled[unsent_mint]) == ("active", "pending")
        with pytest.raises(RemoteError) as no_plan:
            await user.overlay.requests.request(
                seller,
                SALE,
                SaleRequest(op="offer", agent=agent, plan="gold", buyer=str(buyer_key)),
            )
        assert no_plan.value.code == "no_such_plan"
        with pytest.raises(CommerceError, match=r"no plan .gold."):
            await user.commerce.buy(agent, "gold")
        poor = Keypair()
        ask_poor = SaleRequest(op="offer", agent=agent, plan="pro", buyer=str(poor.pubkey()))
        poor_offer = (await user.overlay.requests.request(seller, SALE, ask_poor)).offer
        poor_terms = Offer.verify(poor_offer).terms  # its own rent: addresses vary in length
        poor_rent = await ledger.rent(mint_size(poor_terms))
        poor_tx = purchase_transaction(
            poor_terms, poor, new_seed(), poor_rent, await ledger.blockhash()
        )
        sold = len(await creator.commerce.sold.all())
        with pytest.raises(RemoteError) as broke:
            await user.overlay.requests.request(
                seller, SALE, SaleRequest(op="buy", offer=poor_offer, transaction=poor_tx)
            )
        assert broke.value.code == "cannot_pay"
        assert len(await creator.commerce.sold.all()) == sold
        assert await ledger.balance(creator_key) == balances[0] + PRO

        # A subscription runs until its period ends; a renewal starts where it ends.
        sub = await user.commerce.buy(agent, "monthly")
        assert abs(sub.expires - (time.time() + 30 * DAY)) < 120
        renewed = await user.commerce.buy(agent, "monthly")
        assert renewed.expires == sub.expires + 30 * DAY
        listed = (await user.api.commerce.licences()).licences
        assert unsent_mint not in {x.mint for x in listed}  # its blockhash expired unsent
        sub_use = _use(user, provider, sub.mint)
        assert (await _quote(user, provider, agent, sub_use)).version == "2.0.0"
        monkeypatch.setattr(entitlements_module, "time", Shifted(31))
        provider.commerce.entitlements.forget(sub.mint)  # as after the cache ages out
        with pytest.raises(RemoteError) as lapsed:
            await _quote(user, provider, agent, sub_use)
        assert lapsed.value.code == "licence_refused" and "expired" in lapsed.value.message
        monkeypatch.undo()

        # Refunds: within the window the price comes back and the token is burnt;
        # the provider then refuses it. A plan without refunds refuses, and so does
        # a refund after the window.
        paid_back = await ledger.balance(buyer_key)
        refunded = await user.commerce.refund(bought.mint)
        assert refunded.refunded and refunded.state() == "refunded"
        assert await ledger.balance(buyer_key) == paid_back + PRO
        gone = read_licence(
            mint,
            await ledger.account(mint),
            buyer_key,
            await ledger.account(licence_account(buyer_key, mint)),
        )
        assert gone.amount == 0
        use = _use(user, provider, bought.mint)

        async def revoked() -> bool:
            try:
                await _quote(user, provider, agent, use, "^1")
            except RemoteError as exc:
                return exc.code == "licence_refused"
            return False

        await until(revoked, 30, "the provider refusing the refunded licence")
        # The refund's answer lost on the way (the row as before it): asking again
        # is refused, and the row learns it was refunded.
        await user.commerce.held.refunded(bought.mint, "")
        with pytest.raises(SaleRefused) as lost:
            await user.commerce.refund(bought.mint)
        assert lost.value.code == "already_refunded"
        relearnt = await user.commerce.held.get(bought.mint)
        assert relearnt is not None and relearnt.refunded == refunded.refunded
        with pytest.raises(SaleRefused) as twice:
            await user.commerce.refund(sub.mint)
        assert twice.value.code == "no_refunds"
        # A renewed subscription is refunded newest period first: the older one
        # refunded alone would leave the renewal running from now for one price.
        week1 = await user.commerce.buy(agent, "weekly")
        week2 = await user.commerce.buy(agent, "weekly")
        with pytest.raises(SaleRefused) as order:
            await user.commerce.refund(week1.mint)
        assert order.value.code == "refund_newest_first"
        await user.commerce.refund(week2.mint)
        assert (await user.commerce.refund(week1.mint)).state() == "refunded"
        second = await user.commerce.buy(agent, "pro")
        for module in (service_module, messages_module):  # both nodes, 15 days on
            monkeypatch.setattr(module, "time", Shifted(15))
        with pytest.raises(SaleRefused) as late:
            await user.commerce.refund(second.mint)
        assert late.value.code == "refund_window_over"
        monkeypatch.undo()
        totals = {(t["plan"]): t for t in await creator.commerce.sold.totals()}
        assert totals["pro"]["sales"] == 3 and totals["pro"]["refunds"] == 1
        assert totals["monthly"]["lamports"] == 2 * MONTHLY
