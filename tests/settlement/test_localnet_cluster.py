"""The localnet's ledger keeps time and history like a cluster: slots on a clock,
a window of blockhashes, version-0 transactions, durable nonces, simulation
fields, batches, and transactions kept across a restart. In process, through
`LocalnetRpc.answer`, on a real `ClusterLedger`."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.system_program import (
    AdvanceNonceAccountParams,
    TransferParams,
    advance_nonce_account,
    create_nonce_account,
    transfer,
)
from solders.transaction import Transaction, VersionedTransaction

from mercato.settlement import LocalnetRpc, open_cluster_ledger, read_nonce

SOL = 10**9
WINDOW = 150


async def call(rpc: LocalnetRpc, method: str, *params: Any) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    return json.loads(await rpc.answer(body.encode()))


async def result(rpc: LocalnetRpc, method: str, *params: Any) -> Any:
    answer = await call(rpc, method, *params)
    assert "error" not in answer, answer
    return answer["result"]


def wire(tx: Transaction | VersionedTransaction) -> str:
    return base64.b64encode(bytes(tx)).decode()


async def send(rpc: LocalnetRpc, tx: Transaction | VersionedTransaction, **options: Any) -> Any:
    return await call(rpc, "sendTransaction", wire(tx), {"encoding": "base64", **options})


async def funded(rpc: LocalnetRpc, lamports: int = 10 * SOL) -> Keypair:
    who = Keypair()
    await result(rpc, "requestAirdrop", str(who.pubkey()), lamports)
    return who


def pay(payer: Keypair, to: Pubkey, lamports: int, blockhash: Hash) -> Transaction:
    ix = transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=to, lamports=lamports))
    return Transaction([payer], Message([ix], payer.pubkey()), blockhash)


async def latest(rpc: LocalnetRpc) -> tuple[Hash, int]:
    value = (await result(rpc, "getLatestBlockhash"))["value"]
    return Hash.from_string(value["blockhash"]), value["lastValidBlockHeight"]


async def test_a_blockhash_serves_150_slots_and_many_transactions_share_a_slot(
    tmp_path: Path,
) -> None:
    async with open_cluster_ledger(tmp_path / "ledger.db") as ledger:
        rpc = LocalnetRpc(ledger)
        payer, to = await funded(rpc), Keypair().pubkey()
        blockhash, valid_until = await latest(rpc)
        slot = await result(rpc, "getSlot")
        assert valid_until == slot + WINDOW
        first = await send(rpc, pay(payer, to, SOL, blockhash))
        second = await send(rpc, pay(payer, to, 2 * SOL, blockhash))  # a cached blockhash
        assert "result" in first and "result" in second, (first, second)
        assert await result(rpc, "getSlot") == slot  # no clock ran: still one slot
        for _ in range(WINDOW - 1):
            await ledger.advance()
        assert (await result(rpc, "isBlockhashValid", str(blockhash)))["value"] is True
        late = await send(rpc, pay(payer, to, 3 * SOL, blockhash))
        assert "result" in late, late
        await ledger.advance()  # the 151st slot: that blockhash has expired
        assert (await result(rpc, "isBlockhashValid", str(blockhash)))["value"] is False
        expired = await send(rpc, pay(payer, to, 4 * SOL, blockhash))
        assert expired["error"]["code"] == -32002
        assert expired["error"]["message"] == "Transaction simulation failed: Blockhash not found"
        assert expired["error"]["data"]["err"] == "BlockhashNotFound"
        assert (await result(rpc, "getBalance", str(to)))["value"] == 6 * SOL


async def test_version_0_transactions_land_and_their_history_outlives_a_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    async with open_cluster_ledger(path) as ledger:
        rpc = LocalnetRpc(ledger)
        payer, to = await funded(rpc), Keypair().pubkey()
        blockhash, _ = await latest(rpc)
        ix = transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=to, lamports=SOL))
        v0 = VersionedTransaction(
            MessageV0.try_compile(payer.pubkey(), [ix], [], blockhash), [payer]
        )
        sent = await send(rpc, v0)
        assert "result" in sent, sent
        legacy = await send(rpc, pay(payer, to, SOL, blockhash))
        signatures = [sent["result"], legacy["result"]]
    async with open_cluster_ledger(path) as ledger:  # a restart
        rpc = LocalnetRpc(ledger)
        refused = await call(rpc, "getTransaction", signatures[0], {"encoding": "json"})
        assert refused["error"]["code"] == -32015  # a v0 transaction needs the client to say so
        shown = await result(
            rpc, "getTransaction", signatures[0], {"maxSupportedTransactionVersion": 0}
        )
        assert shown["version"] == 0
        assert shown["meta"]["err"] is None and shown["meta"]["fee"] == 5000
        assert shown["meta"]["postBalances"][1] - shown["meta"]["preBalances"][1] == SOL
        assert shown["meta"]["computeUnitsConsumed"] > 0
        assert shown["transaction"]["message"]["accountKeys"][1] == str(to)
        newest_first = await result(rpc, "getSignaturesForAddress", str(to))
        assert [s["signature"] for s in newest_first] == signatures[::-1]
        older = await result(
            rpc, "getSignaturesForAddress", str(to), {"before": signatures[1], "limit": 5}
        )
        assert [s["signature"] for s in older] == signatures[:1]
        statuses = await result(rpc, "getSignatureStatuses", signatures)
        assert all(s["confirmationStatus"] == "finalized" for s in statuses["value"])
        block = await result(rpc, "getBlock", shown["slot"], {"maxSupportedTransactionVersion": 0})
        assert len(block["transactions"]) >= 2
        assert await result(rpc, "getBlockTime", shown["slot"]) == shown["blockTime"]
        assert await result(rpc, "getTransactionCount") == 2
        # The blockhash made before the restart is still in the window.
        assert (await result(rpc, "isBlockhashValid", str(blockhash)))["value"] is True
        again = await send(rpc, pay(payer, to, SOL, blockhash))
        assert "result" in again, again


async def test_simulation_reports_units_and_accounts_and_may_skip_signatures(
    tmp_path: Path,
) -> None:
    async with open_cluster_ledger(tmp_path / "ledger.db") as ledger:
        rpc = LocalnetRpc(ledger)
        payer, to = await funded(rpc), Keypair().pubkey()
        blockhash, _ = await latest(rpc)
        ix = transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=to, lamports=SOL))
        unsigned = Transaction.new_unsigned(Message([ix], payer.pubkey()))
        options = {"encoding": "base64", "replaceRecentBlockhash": True,
                   "accounts": {"addresses": [str(to)], "encoding": "base64"}}  # fmt: skip
        value = (await result(rpc, "simulateTransaction", wire(unsigned), options))["value"]
        assert value["err"] is None and value["unitsConsumed"] > 0
        assert value["accounts"][0]["lamports"] == SOL
        assert value["replacementBlockhash"]["blockhash"] == str(blockhash)
        checked = {"encoding": "base64", "sigVerify": True}
        forged = await result(rpc, "simulateTransaction", wire(unsigned), checked)
        assert forged["value"]["err"] == "SignatureFailure"
        both = await call(rpc, "simulateTransaction", wire(unsigned), {**checked, **options})
        assert both["error"]["code"] == -32602
        assert (await result(rpc, "getBalance", str(to)))["value"] == 0  # nothing committed


async def test_a_durable_nonce_is_usable_again_at_once_and_only_with_its_value(
    tmp_path: Path,
) -> None:
    async with open_cluster_ledger(tmp_path / "ledger.db") as ledger:
        rpc = LocalnetRpc(ledger)
        payer, nonce = await funded(rpc), Keypair()
        blockhash, _ = await latest(rpc)
        rent = await result(rpc, "getMinimumBalanceForRentExemption", 80)
        made = create_nonce_account(payer.pubkey(), nonce.pubkey(), payer.pubkey(), rent)
        created = Transaction([payer, nonce], Message(made, payer.pubkey()), blockhash)
        assert "result" in await send(rpc, created)
        for _ in range(2):  # twice in a row, with no clock between
            account = await result(
                rpc, "getAccountInfo", str(nonce.pubkey()), {"encoding": "base64"}
            )
            stored = read_nonce(base64.b64decode(account["value"]["data"][0]))[1]
            advance = advance_nonce_account(
                AdvanceNonceAccountParams(
                    nonce_pubkey=nonce.pubkey(), authorized_pubkey=payer.pubkey()
                )
            )
            ix = transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=Keypair().pubkey(),
                                         lamports=SOL))  # fmt: skip
            tx = Transaction([payer], Message([advance, ix], payer.pubkey()), stored)
            sent = await send(rpc, tx)
            assert "result" in sent, sent
        replayed = await send(rpc, tx, skipPreflight=False)  # its nonce has moved on
        assert "error" in replayed


async def test_batches_answer_each_request_in_order(tmp_path: Path) -> None:
    async with open_cluster_ledger(tmp_path / "ledger.db") as ledger:
        rpc = LocalnetRpc(ledger)
        batch = [
            {"jsonrpc": "2.0", "id": 1, "method": "getSlot", "params": []},
            {"jsonrpc": "2.0", "id": "b", "method": "nope", "params": []},
            {"jsonrpc": "2.0", "id": 3, "method": "getBalance", "params": ["bad key"]},
        ]
        answers = json.loads(await rpc.answer(json.dumps(batch).encode()))
        assert [a["id"] for a in answers] == [1, "b", 3]
        assert isinstance(answers[0]["result"], int)
        assert answers[1]["error"]["code"] == -32601
        assert answers[2]["error"]["code"] == -32602
        too_many = json.dumps([batch[0]] * 101).encode()
        assert json.loads(await rpc.answer(too_many))["error"]["code"] == -32600


async def test_oversized_and_forged_transactions_get_the_clusters_errors(tmp_path: Path) -> None:
    async with open_cluster_ledger(tmp_path / "ledger.db") as ledger:
        rpc = LocalnetRpc(ledger)
        payer, to = await funded(rpc), Keypair().pubkey()
        blockhash, _ = await latest(rpc)
        big = base64.b64encode(b"\1" * 1300).decode()
        answer = await call(rpc, "sendTransaction", big, {"encoding": "base64"})
        assert answer["error"]["code"] == -32602
        assert "too large" in answer["error"]["message"]
        signed = pay(payer, to, SOL, blockhash)
        forged = Transaction.populate(signed.message, [Keypair().sign_message(b"x")])
        refused = await send(rpc, forged)
        assert refused["error"] == {
            "code": -32003,
            "message": "Transaction signature verification failure",
        }
        assert (await result(rpc, "getBalance", str(to)))["value"] == 0
        assert await result(rpc, "getTransactionCount") == 0
