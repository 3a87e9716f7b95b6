"""`mercato earnings`, `mercato usage --by provider` and `mercato events --kind` on
real nodes: a creator, a provider and a user on one embedded ledger, paid tasks
with a royalty, and the provider's close of the channel."""

import json
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner, Result
from solders.pubkey import Pubkey

from mercato.cli import main
from mercato.node import Node
from mercato.settlement import open_embedded_ledger

from ..conftest import budget
from ..node.test_registry_network import running_nodes
from ..node.test_tasks import EXAMPLES, LISTING, until

PRICE = 10_000_000  # lamports a task
ROYALTY_BPS = 1000  # 10 %: 1,000,000 a task to the creator, enough for a new account
TASKS = 3
CLOSE_FEES = 2 * 5000  # the close's two signatures, paid by the provider


async def cli(node: Node, *args: str) -> Result:
    """``mercato ARGS --data-dir NODE`` in a thread (the node answers on this one)."""
    argv = [*args, "--data-dir", str(node.datadir.root)]
    return await trio.to_thread.run_sync(lambda: CliRunner().invoke(main, argv))


async def cli_json(node: Node, *args: str) -> dict:
    out = await cli(node, *args, "--json")
    assert out.exit_code == 0, out.output
    return json.loads(out.output)


@pytest.mark.slow
async def test_earnings_add_up_to_the_closed_channel_and_usage_names_the_provider(
    tmp_path: Path,
) -> None:
    fast = {"heartbeat_s": 0.5, "card_ttl_s": 5.0}
    async with (
        open_embedded_ledger(tmp_path / "ledger.db") as ledger,
        running_nodes(tmp_path, 3, serve=fast, ledger=ledger) as (creator, provider, user),
    ):
        for a, b in ((creator, provider), (creator, user), (provider, user)):
            await a.overlay.host.connect(b.overlay.host.listen_addrs()[0])
        listing = {**LISTING, "name": "wc", "price": PRICE, "royalty_bps": ROYALTY_BPS}
        publisher = (await creator.registry.publish("default", listing))["publisher"]
        wasm = EXAMPLES / "wordcount" / "wordcount.wasm"
        await creator.api.registry.release("default", {"name": "wc", "version": "1.0.0"}, wasm)
        agent = f"{publisher}/wc"
        provider.tasks.serve_agents((agent,))

        async def ready() -> bool:
            shown = [await n.registry.show(publisher, "wc") for n in (provider, user)]
            return all(s and s["releases"] for s in shown) and bool(user.tasks.providers(agent))

        await until(ready, budget(30), "the release and the provider's card")
        for i in range(TASKS):
            done = await user.tasks.run_task(agent, "*", b"pay me %d" % i)
        stake = done["receipt"].channel

        # Before the close: the tasks are counted, the channel is open.
        found = await cli_json(provider, "earnings")
        assert found["totals"]["tasks"] == TASKS and found["totals"]["closed_earned"] == 0
        share, royalty = PRICE * 9 // 10, PRICE // 10
        assert found["totals"]["open_earned"] == TASKS * share

        wallet = Pubkey.from_string(provider.settlement.address)
        before = await ledger.balance(wallet)
        close = await cli(provider, "channel", "close", stake)
        assert close.exit_code == 0, close.output
        received = await ledger.balance(wallet) - before + CLOSE_FEES  # what the close paid it

        found = await cli_json(provider, "earnings", "--days", "1")
        (row,) = found["listings"]
        assert row == {
            "agent": agent, "creator": False, "tasks": TASKS, "tasks_ok": TASKS,
            "gross": TASKS * PRICE, "revenue": TASKS * share, "royalties": TASKS * royalty,
        }  # fmt: skip
        (channel,) = found["channels"]
        assert (channel["stake"], channel["status"]) == (stake, "closed")
        assert channel["earned"] == found["totals"]["closed_earned"] == received
        assert found["totals"]["revenue"] == received  # the receipts add up to the close
        assert channel["paid"] == TASKS * PRICE and channel["royalties"] == TASKS * royalty

        text = await cli(provider, "earnings")
        assert text.exit_code == 0, text.output
        lines = text.output.splitlines()
        header = next(line for line in lines if line.startswith("LISTING"))
        assert header.split() == ["LISTING", "TASKS", "OK", "REVENUE", "ROYALTIES"]
        assert any(line.startswith("total") and f"{TASKS * share:,} lamports" in line
                   for line in lines)  # fmt: skip
        assert f"closed channels paid this node {received:,} lamports" in text.output
        since = await cli_json(provider, "earnings", "--since", "2000-01-01")
        assert since["totals"] == found["totals"]
        both = await cli(provider, "earnings", "--days", "2", "--since", "2000-01-01")
        assert both.exit_code == 2 and "not both" in both.output
        # The user served nothing: no earnings.
        nothing = await cli(user, "earnings")
        assert nothing.exit_code == 0 and "nothing served" in nothing.output

        # The user's spend per listing and provider.
        usage = await cli_json(user, "usage", "--by", "provider")
        assert [(r["agent"], r["provider"], r["calls"], r["lamports"]) for r in usage["usage"]] == [
            (agent, provider.overlay.peer_id, TASKS, TASKS * PRICE)
        ]
        table = await cli(user, "usage", "--by", "provider")
        assert provider.overlay.peer_id[:12] in table.output.splitlines()[1]

        # The event log by family: the provider's tasks served, the user's runs.
        async def all_recorded() -> bool:
            found = await user.api.node.events(0, 1000, "payment.sent")
            return len(found.events) == TASKS

        await until(all_recorded, budget(10), "the payments' events")
        for node, kind in ((provider, "task.served"), (user, "task.run")):
            out = await cli(node, "events", "--kind", "task")
            assert out.exit_code == 0, out.output
            header, *entries = out.output.splitlines()
            assert header.split() == ["SEQ", "TIME", "KIND", "DATA"]
            assert [e.split()[3] for e in entries] == [kind] * TASKS
            listed = [json.loads(e) for e in (await cli(node, "events", "--kind", "task",
                                                        "--json")).output.splitlines()]  # fmt: skip
            assert {e["kind"] for e in listed} == {kind}
