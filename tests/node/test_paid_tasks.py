"""Paid tasks: the user pays each task through a channel on a shared embedded ledger."""

import json
from pathlib import Path

import pytest
from solders.pubkey import Pubkey

from node._tasks import TASK, NoProvider, TaskRequest
from p2p import RemoteError
from settlement import (
    NONCE_ACCOUNT_SIZE,
    STAKE_ACCOUNT_SIZE,
    open_embedded_ledger,
    settle_due,
)

from .test_registry_network import running_nodes
from .test_tasks import EXAMPLES, LISTING, until

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
        await creator.release_build("default", {"name": "wc", "version": "1.0.0"}, wasm)
        agent = f"{publisher}/wc"
        provider.tasks.serve_agents((agent,))

        async def ready() -> bool:
            shown = [await n.registry.show(publisher, "wc") for n in (provider, user)]
            return all(s and s["releases"] for s in shown) and bool(user.tasks.providers(agent))

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
        (channel,) = user.settlement.channels()
        assert channel["role"] == "payer" and channel["paid"] == 3 * PRICE
        assert [r.cumulative for r in receipts] == [PRICE, 2 * PRICE, 3 * PRICE]
        assert {r.channel for r in receipts} == {channel["stake"]}
        (served,) = provider.settlement.channels()
        assert (served["role"], served["paid"]) == ("payee", 3 * PRICE)

        # Near the lockup's end the provider's watcher closes with the latest state.
        await ledger.set_time(channel["expires"] - 60)
        money = provider.settlement
        done = await settle_due(money.book, ledger, {wallets[provider]: money.wallet}, 3600)
        assert done == [(channel["stake"], "closed")]
        after = {n: await ledger.balance(k) for n, k in wallets.items()}
        assert after[provider] - before[provider] == 3 * 9_000_000 - 2 * FEE
        assert after[creator] - before[creator] == 3 * 1_000_000
        # The user paid the three tasks, the opening's fee (three signatures) and the
        # two accounts' rent; the rest of its deposit came back at the close.
        rent = await ledger.rent(STAKE_ACCOUNT_SIZE) + await ledger.rent(NONCE_ACCOUNT_SIZE)
        assert before[user] - after[user] == 3 * PRICE + 3 * FEE + rent
        # A closed channel takes no more payments: the next task opens a new one.
        again = await user.tasks.run_task(agent, "*", b"one more")
        assert again["receipt"].channel != channel["stake"]


@pytest.mark.slow
async def test_a_provider_on_another_ledger_says_so_and_runs_nothing(tmp_path: Path) -> None:
    fast = {"heartbeat_s": 0.5, "card_ttl_s": 5.0}
    async with running_nodes(tmp_path, 2, serve=fast, repair_interval_s=1.0) as nodes:
        provider, user = nodes  # each on its own embedded ledger
        await user.overlay.host.connect(provider.overlay.host.listen_addrs()[0])
        paid = {**LISTING, "name": "wc", "price": PRICE, "royalty_bps": 0}
        publisher = (await provider.registry.publish("default", paid))["publisher"]
        wasm = EXAMPLES / "wordcount" / "wordcount.wasm"
        cid = (await provider.builds.add_file(wasm)).cid
        release = {"name": "wc", "version": "1.0.0", "cid": cid, "size": wasm.stat().st_size}
        await provider.registry.release("default", release)
        agent = f"{publisher}/wc"
        provider.tasks.serve_agents((agent,))

        async def ready() -> bool:
            shown = await user.registry.show(publisher, "wc")
            return bool(shown and shown["releases"] and user.tasks.providers(agent))

        await until(ready, 30, "the release and the card")
        with pytest.raises(NoProvider, match="not on this node's ledger"):
            await user.tasks.run_task(agent, "*", b"a b")
        assert provider.tasks.served == 0
        standing = user.tasks.runner.reputation.get(provider.overlay.peer_id)
        assert standing.bad == 0  # the provider is not to blame
