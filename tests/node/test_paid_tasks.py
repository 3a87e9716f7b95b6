"""Paid tasks: the user pays each task through a channel on a shared embedded ledger."""

import json
from pathlib import Path

import pytest
import trio
from solders.pubkey import Pubkey

from mercato.node.tasks._messages import TASK, NoProvider, TaskRequest
from mercato.p2p import Refused, RemoteError
from mercato.settlement import (
    NONCE_ACCOUNT_SIZE,
    STAKE_ACCOUNT_SIZE,
    open_embedded_ledger,
    settle_due,
)

from ..conftest import budget
from .test_registry_network import running_nodes
from .test_tasks import EXAMPLES, LISTING, serve_an_agent, until

PRICE = 10_000_000  # lamports a task
ROYALTY_BPS = 1000  # 10 % to the creator: 1,000,000 a task, enough for a new account
FEE = 5000


@pytest.mark.slow
async def test_paid_tasks_pay_the_provider_and_the_creator_when_the_channel_closes(
    tmp_path: Path,
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
        paid = {**LISTING, "name": "wc", "price": PRICE, "royalty_bps": ROYALTY_BPS}
        publisher = (await creator.registry.publish("default", paid))["publisher"]
        wasm = EXAMPLES / "wordcount" / "wordcount.wasm"
        await creator.api.registry.release("default", {"name": "wc", "version": "1.0.0"}, wasm)
        # The README's example price: 1,000 lamports, 500 bps (50 lamports a task).
        cheap = {**LISTING, "name": "wc-cheap", "price": 1000, "royalty_bps": 500}
        await creator.registry.publish("default", cheap)
        await creator.api.registry.release(
            "default", {"name": "wc-cheap", "version": "1.0.0"}, wasm
        )
        agent, cheap_agent = f"{publisher}/wc", f"{publisher}/wc-cheap"
        provider.tasks.serve_agents((agent, cheap_agent))

        async def ready() -> bool:
            shown = [await n.registry.show(publisher, a) for n in (provider, user)
                     for a in ("wc", "wc-cheap")]  # fmt: skip
            cards = all(user.tasks.providers(a) for a in (agent, cheap_agent))
            return all(s and s["releases"] for s in shown) and cards

        await until(ready, 30, "the release and the provider's card")
        wallets = {n: Pubkey.from_string(n.settlement.address) for n in (creator, provider, user)}
        before = {n: await ledger.balance(k) for n, k in wallets.items()}

        # A run without payment is refused before anything runs.
        pid = provider.overlay.peer_id
        asked = TaskRequest(op="quote", agent=agent, version="*", input_size=3)
        quote = (await user.overlay.requests.request(pid, TASK, asked)).quote
        unpaid = TaskRequest(op="run", agent=agent, version="1.0.0", task=b"t" * 16,
                             quote=quote, input=b"a b", max_price=PRICE)  # fmt: skip
        with pytest.raises(RemoteError) as refused:
            await user.overlay.requests.request(pid, TASK, unpaid)
        assert refused.value.code == "payment_required" and provider.tasks.served == 0

        receipts = []
        for i in range(3):
            done = await user.tasks.run_task(agent, "*", b"pay me %d" % i)
            assert json.loads(done["output"])["words"] == 3
            receipts.append(done["receipt"])
        # A run refused before the provider took the state: that price is credit, and
        # the next task uses it instead of paying again.
        answer = provider.tasks._answer
        refused_once: list[bool] = []

        async def refuse_first_run(peer, request):
            if request.op == "run" and not refused_once:
                refused_once.append(True)
                raise Refused("quote_expired", "ask again")  # the user asks again, once
            return await answer(peer, request)

        provider.overlay.requests.serve(TASK, refuse_first_run)
        done = await user.tasks.run_task(agent, "*", b"after a refusal", pid)
        assert refused_once and done["receipt"].cumulative == 4 * PRICE
        provider.overlay.requests.serve(TASK, answer)
        # Three paid tasks at once to the same provider: each paid exactly once.
        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(user.tasks.run_task, agent, "*", b"at once %d" % i)
        # A task that ran but whose answer never came back: the user counted its price
        # as credit, the provider had used it; the next task finds out and pays anew.
        lost: list[bool] = []

        async def lose_the_answer(peer, request):
            response = await answer(peer, request)
            if request.op == "run" and not lost:
                lost.append(True)
                raise Refused("busy", "gone")
            return response

        provider.overlay.requests.serve(TASK, lose_the_answer)
        with pytest.raises(NoProvider):
            await user.tasks.run_task(agent, "*", b"lost", pid)
        provider.overlay.requests.serve(TASK, answer)
        found = await user.tasks.run_task(agent, "*", b"found", pid)
        assert found["receipt"].cumulative == 9 * PRICE  # the lost one was served, and paid
        (channel,) = user.settlement.channels()
        assert channel["role"] == "payer" and channel["paid"] == 9 * PRICE
        (served,) = provider.settlement.channels()
        assert served["settled"] == served["owed"] and sum(served["settled"].values()) == 9 * PRICE
        assert [r.cumulative for r in receipts] == [PRICE, 2 * PRICE, 3 * PRICE]
        assert {r.channel for r in receipts} == {channel["stake"]}
        assert served["role"] == "payee"

        # Near the lockup's end the provider's watcher closes with the latest state.
        await ledger.set_time(channel["expires"] - 60)
        money = provider.settlement
        done = await settle_due(money.book, ledger, {wallets[provider]: money.wallet}, 3600)
        assert done == [(channel["stake"], "closed")]
        after = {n: await ledger.balance(k) for n, k in wallets.items()}
        assert after[provider] - before[provider] == 9 * 9_000_000 - 2 * FEE
        assert after[creator] - before[creator] == 9 * 1_000_000
        # The user paid the three tasks, the opening's fee (three signatures) and the
        # two accounts' rent; the rest of its deposit came back at the close.
        rent = await ledger.rent(STAKE_ACCOUNT_SIZE) + await ledger.rent(NONCE_ACCOUNT_SIZE)
        assert before[user] - after[user] == 9 * PRICE + 3 * FEE + rent
        # A closed channel takes no more payments: the next task opens a new one. At
        # the README's price the royalty is far below what a new account needs: the
        # provider holds it and forwards it right after its close, to the lamport.
        for i in range(3):
            again = await user.tasks.run_task(cheap_agent, "*", b"one more %d" % i)
        assert again["receipt"].channel != channel["stake"]
        before = {n: await ledger.balance(k) for n, k in wallets.items()}
        closed, _ = await money.close_channel(again["receipt"].channel)
        assert closed.status == "closed"
        after = {n: await ledger.balance(k) for n, k in wallets.items()}
        assert after[creator] - before[creator] == 3 * 50
        assert after[provider] - before[provider] == 3 * 950 - 3 * FEE  # close and forward
        held_now = (await money.wallet_info())["held"]
        assert held_now == {"due": 0, "sending": 0, "paid": 150, "recipients": {}}


@pytest.mark.slow
async def test_a_provider_on_another_ledger_says_so_and_runs_nothing(tmp_path: Path) -> None:
    fast = {"heartbeat_s": 0.5, "card_ttl_s": 5.0}
    async with running_nodes(tmp_path, 2, serve=fast, repair_interval_s=1.0) as nodes:
        provider, user = nodes  # each on its own embedded ledger
        await user.overlay.host.connect(provider.overlay.host.listen_addrs()[0])
        agent = await serve_an_agent(provider, user, PRICE)
        with pytest.raises(NoProvider, match="not on this node's ledger"):
            await user.tasks.run_task(agent, "*", b"a b")
        assert provider.tasks.served == 0
        standing = user.tasks.runner.reputation.get(provider.overlay.peer_id)
        assert standing.bad == 0  # the provider is not to blame


@pytest.mark.slow
async def test_a_provider_that_keeps_payments_is_paid_twice_at_most(tmp_path: Path) -> None:
    fast = {"heartbeat_s": 0.5, "card_ttl_s": 5.0}
    async with (
        open_embedded_ledger(tmp_path / "shared-ledger.db") as ledger,
        running_nodes(tmp_path, 2, serve=fast, ledger=ledger, repair_interval_s=1.0) as nodes,
    ):
        provider, user = nodes
        await user.overlay.host.connect(provider.overlay.host.listen_addrs()[0])
        agent = await serve_an_agent(provider, user, PRICE)
        answer = provider.tasks._answer

        async def keep_the_money(peer, request):
            response = await answer(peer, request)  # takes the payment (and runs)
            if request.op == "run":
                raise Refused("busy", "try later")  # ... and never answers
            return response

        provider.overlay.requests.serve(TASK, keep_the_money)
        pid = provider.overlay.peer_id
        for _ in range(3):
            with pytest.raises(NoProvider):
                await user.tasks.run_task(agent, "*", b"a b", pid)
        with pytest.raises(NoProvider, match="not paying it"):
            await user.tasks.run_task(agent, "*", b"a b", pid)
        (channel,) = user.settlement.channels()
        assert channel["paid"] == 2 * PRICE  # then it stopped paying
        assert user.tasks.runner.reputation.get(pid).failed >= 1


async def follow_as_attacker(attacker, user, agent: str) -> None:
    """The attacker joins the agent's card group, as any peer can, and waits until
    the user (which follows the agent) is its neighbour there."""
    from mercato.node.tasks._cards import card_topic

    await attacker.tasks.exchange.find(agent, budget(10))
    assert user.tasks.exchange.follows(agent)
    await attacker.overlay.gossip.wait_for_mesh(user.overlay.peer_id, card_topic(agent))


async def publish_fake_cards(attacker, agent: str, count: int, before: str = "") -> set[str]:
    """``count`` agent cards for ``agent``, each signed by a fresh key, price 0, at
    addresses where nothing listens, gossiped by ``attacker`` as any peer can.
    ``before``: peer ids that sort before it (a tie in the ranking goes to them)."""
    import time as clock

    from mercato.node.tasks._cards import AgentCard, card_topic
    from mercato.p2p import Keypair

    fakes = set()
    for i in range(count):
        key = Keypair.generate()
        while before and key.peer_id >= before:
            key = Keypair.generate()
        card = AgentCard(
            provider=key.peer_id, seq=1, expires=clock.time() + 300, agents=[agent],
            prices=[0], load=0.0, addrs=[f"/ip4/127.0.0.1/tcp/{9 + i}/p2p/{key.peer_id}"],
        )  # fmt: skip
        await attacker.overlay.gossip.publish(card_topic(agent), card.sign(key))
        fakes.add(key.peer_id)
    return fakes


@pytest.mark.slow
async def test_twenty_fake_free_cards_do_not_keep_a_paid_task_from_the_real_provider(
    tmp_path: Path,
) -> None:
    fast = {"heartbeat_s": 0.5, "card_ttl_s": 30.0}
    async with (
        open_embedded_ledger(tmp_path / "shared-ledger.db") as ledger,
        running_nodes(tmp_path, 3, serve=fast, ledger=ledger) as (provider, user, attacker),
    ):
        for a, b in ((user, provider), (user, attacker), (provider, attacker)):
            await a.overlay.host.connect(b.overlay.host.listen_addrs()[0])
        agent = await serve_an_agent(provider, user, price=PRICE)
        await follow_as_attacker(attacker, user, agent)
        fakes = await publish_fake_cards(attacker, agent, 20)
        await until(
            lambda: _knows(user, agent, fakes), budget(20), "the fake cards at the user's node"
        )
        for i in range(3):
            done = await user.tasks.run_task(agent, "*", b"one two %d" % i)
            assert done["provider"] == provider.overlay.peer_id
            assert json.loads(done["output"])["words"] == 3
            # What failed on the way were fakes that could not even quote.
            assert {a["provider"] for a in done["attempts"]} <= fakes
        assert provider.tasks.served == 3


async def _knows(user, agent: str, fakes: set[str]) -> bool:
    return fakes <= {c["provider"] for c in user.tasks.providers(agent)}


@pytest.mark.slow
async def test_cards_that_lead_nowhere_are_asked_after_the_provider_that_answered(
    tmp_path: Path,
) -> None:
    """The user is not connected to the provider: its card and twenty fakes look
    alike. The fakes tried and found dead sink below the untried ones, and the next
    task goes to the real provider first."""
    fast = {"heartbeat_s": 0.5, "card_ttl_s": 30.0}
    # Each round of quotes waits until all it asked have answered (the fakes fail
    # fast), so a slow machine cannot let the real quote overtake the first fakes.
    patient = {"quote_deadline_s": min(budget(30), 60)}
    async with running_nodes(tmp_path, 3, serve=fast, tasks=patient) as (
        provider,
        user,
        attacker,
    ):
        for a, b in ((user, attacker), (provider, attacker)):
            await a.overlay.host.connect(b.overlay.host.listen_addrs()[0])
        agent = await serve_an_agent(provider, user)  # its card reaches the user by gossip
        await follow_as_attacker(attacker, user, agent)
        real = provider.overlay.peer_id
        fakes = await publish_fake_cards(attacker, agent, 20, before=real)  # asked first
        await until(lambda: _knows(user, agent, fakes), budget(20), "the fake cards")
        # Not connected, as the story says: a build's repair or a DHT lookup on a slow
        # machine may have connected the two meanwhile.
        await user.overlay.host.disconnect(real)
        first = await user.tasks.run_task(agent, "*", b"one two")
        assert first["provider"] == real
        tried = {a["provider"] for a in first["attempts"]}
        assert tried and tried <= fakes
        ranked = [c["provider"] for c in user.tasks.providers(agent)]
        assert ranked[0] == real
        # Every fake found dead ranks below every fake not tried yet.
        assert {p for p in ranked[len(ranked) - len(tried) :]} == tried
        # Connections drop; the next task asks the provider in its first round (the
        # quote_fanout best, asked at once), whatever the first task went through.
        await user.overlay.host.disconnect(real)
        second = await user.tasks.run_task(agent, "*", b"three four")
        assert second["provider"] == real
        assert len(second["attempts"]) < user.config.tasks.quote_fanout
