"""Per-run receipts provable on chain: real nodes pay on a shared localnet (a
`mercato localnet` process, through the rpc ledger), the provider closes the
channel, and `mercato tasks prove` finds each receipt in the close's memo."""

import base64
import json
from pathlib import Path

import pytest
import trio
from solders.pubkey import Pubkey

from mercato.node.money import Payment
from mercato.node.tasks import NoProof
from mercato.node.tasks._messages import TASK, TaskRequest
from mercato.p2p import RemoteError
from mercato.settlement import (
    RpcLedger,
    parse_receipts_memo,
    receipt_leaf,
    verify_path,
)

from ..conftest import budget, run_cli
from .test_registry_network import running_nodes
from .test_tasks import serve_an_agent, until

PRICE = 10_000_000
TASKS = 4


def cli(node, *args: str):
    return run_cli(*args, "--data-dir", str(node.datadir.root), timeout=60)


@pytest.mark.slow
async def test_the_close_commits_to_every_receipt_and_tasks_prove_checks_the_first_and_last(
    tmp_path: Path, start_localnet
) -> None:
    localnet = start_localnet()
    ledger = RpcLedger(localnet.url, "localnet", faucet=True)
    fast = {"heartbeat_s": 0.5, "card_ttl_s": 5.0}
    try:
        async with running_nodes(
            tmp_path, 2, serve=fast, ledger=ledger, repair_interval_s=1.0
        ) as nodes:
            provider, user = nodes
            await user.overlay.host.connect(provider.overlay.host.listen_addrs()[0])
            agent = await serve_an_agent(provider, user, PRICE)
            done = []
            for i in range(TASKS):
                done.append(await user.tasks.run_task(agent, "*", b"receipt number %d" % i))
            stake = done[0]["receipt"].channel
            assert {d["receipt"].channel for d in done} == {stake}
            book = provider.settlement.book

            # No payment follows the last task: only its acknowledgement tells the
            # provider, whose latest state then commits to every receipt.
            async def all_acknowledged() -> bool:
                return (book.get(stake).receipts or (0,))[0] == TASKS

            started = trio.current_time()
            await until(all_acknowledged, budget(10), "the acknowledgement of the last receipt")
            print(f"last ack stored {1000 * (trio.current_time() - started):.1f} ms after its run")
            assert user.settlement.book.commitment(stake) == book.get(stake).receipts

            # Acknowledgements that do not hold up are refused, and change nothing.
            held = book.get(stake)
            pid = provider.overlay.peer_id
            terms = held.terms.to_wire()
            owed = {str(k): v for k, v in held.owed.items()}
            more = {k: v + 1 for k, v in owed.items()}
            unknown = {**terms, "stake": str(Pubkey.new_unique())}
            for payment in (
                Payment(terms, owed, held.state),  # no more receipts than held
                Payment(terms, more, held.state),  # other payouts
                Payment(unknown, owed, held.state),  # a channel the provider lacks
            ):
                ack = TaskRequest(op="ack", agent=agent, payment=payment.encode())
                with pytest.raises(RemoteError) as refused:
                    await user.overlay.requests.request(pid, TASK, ack)
                assert refused.value.code == "bad_ack"
            assert book.get(stake) == held

            # While the channel is open there is nothing to prove against.
            first, last = done[0]["task"], done[-1]["task"]
            with pytest.raises(NoProof, match=r"still open.*mercato channel close"):
                await user.api.tasks.prove(first)
            shown = await trio.to_thread.run_sync(cli, user, "tasks", "prove", first)
            assert shown.returncode == 1 and "still open" in shown.stderr, shown.stderr

            closed = await provider.api.money.close(stake)
            for task, index in ((first, 0), (last, TASKS - 1)):
                proof = (await user.api.tasks.prove(task)).model_dump()
                assert proof["verified"] and proof["reason"] == ""
                assert (proof["signature"], proof["channel"]) == (closed.signature, stake)
                assert (proof["index"], proof["count"]) == (index, TASKS)
            # The command, and a check of its answer against the ledger by hand.
            shown = await trio.to_thread.run_sync(cli, user, "tasks", "prove", last, "--json")
            assert shown.returncode == 0, shown.stderr
            proof = json.loads(shown.stdout)
            landed = await ledger.landed_transaction(proof["signature"])
            assert landed is not None and landed.succeeded
            message = landed.transaction.message
            (memo,) = [
                bytes(ix.data)
                for ix in message.instructions
                if str(message.account_keys[ix.program_id_index]).startswith("Memo")
            ]
            count, root = parse_receipts_memo(memo)
            task_shown = await user.api.tasks.show(last)
            signed = base64.b64decode(task_shown.sides[0].model_dump()["receipt_signed"])
            path = [bytes.fromhex(h) for h in proof["path"]]
            assert verify_path(receipt_leaf(signed), proof["index"], count, path, root)
            readable = await trio.to_thread.run_sync(cli, user, "tasks", "prove", first)
            assert readable.returncode == 0, readable.stderr
            assert "verified   yes" in readable.stdout and closed.signature in readable.stdout
            # A free task, or a task this node served, has no proof here.
            with pytest.raises(NoProof, match="ran that task for someone else"):
                await provider.api.tasks.prove(first)
    finally:
        await ledger.aclose()
