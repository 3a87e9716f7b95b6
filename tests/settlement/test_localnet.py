"""The rpc ledger against a `mercato localnet` in another process: one ledger that
several processes share, spoken to over Solana's JSON-RPC."""

import base64
import time

import httpx
import pytest
import trio
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from mercato.settlement import (
    NONCE_ACCOUNT_SIZE,
    STAKE_ACCOUNT_SIZE,
    LedgerError,
    LedgerUnreachable,
    LockupInForce,
    RpcLedger,
    check_state,
    countersign,
    open_channel_book,
    read_nonce,
    refund_transaction,
    settle_due,
    sign_state,
)

from ..conftest import run_cli
from .test_channel import FEE, SOL, open_channel

CLOSED_PORT_URL = "http://127.0.0.1:9"  # discard: nothing answers JSON-RPC there


async def test_a_channel_opens_pays_and_closes_on_a_localnet_in_another_process(
    start_localnet,
) -> None:
    localnet = start_localnet()
    ledger = RpcLedger(localnet.url, "localnet", faucet=True)
    try:
        payer, payee, creator = Keypair(), Keypair(), Keypair()
        for who in (payer, payee):
            await ledger.airdrop(who.pubkey(), 10 * SOL)
        assert await ledger.balance(payer.pubkey()) == 10 * SOL
        terms = await open_channel(ledger, payer, payee, deposit=2 * SOL)
        rent = await ledger.rent(STAKE_ACCOUNT_SIZE) + await ledger.rent(NONCE_ACCOUNT_SIZE)
        assert await ledger.balance(payer.pubkey()) == 8 * SOL - rent - 3 * FEE
        nonce = read_nonce((await ledger.account(terms.nonce)).data)[1]
        older = sign_state(terms, nonce, {payee.pubkey(): SOL // 10}, payer)
        owed = {payee.pubkey(): SOL // 2, creator.pubkey(): SOL // 10}
        latest = sign_state(terms, nonce, owed, payer)

        # Before the lockup ends the payer cannot take the deposit back.
        refund = refund_transaction(terms, payer, 2 * SOL, await ledger.blockhash())
        with pytest.raises(LockupInForce):
            await ledger.send(refund)

        close = countersign(check_state(terms, nonce, owed, latest), payee)
        await ledger.simulate(close)
        await ledger.send(close)
        assert await ledger.balance(payee.pubkey()) == 10 * SOL + SOL // 2 - 2 * FEE
        assert await ledger.balance(creator.pubkey()) == SOL // 10  # to the lamport
        # The older state cannot be replayed: the close moved the nonce on.
        replay = countersign(check_state(terms, nonce, {payee.pubkey(): SOL // 10}, older), payee)
        with pytest.raises(LedgerError, match="nonce has moved on"):
            await ledger.send(replay)
        assert await ledger.balance(payee.pubkey()) == 10 * SOL + SOL // 2 - 2 * FEE
        # The clock is the ledger's (the Clock sysvar): the localnet follows the wall clock.
        assert abs(await ledger.now() - time.time()) < 5
        # Whether a blockhash expired is the ledger's answer (isBlockhashValid) for any
        # blockhash: one another client was given, one the ledger never had.
        other = RpcLedger(localnet.url, "localnet")
        try:
            fresh = await other.blockhash()
        finally:
            await other.aclose()
        assert await ledger.blockhash_expired(fresh) is False
        assert await ledger.blockhash_expired(Hash.default()) is True
        assert await ledger.landed(str(close.signatures[0])) is True
        assert await ledger.landed(str(Signature.default())) is None  # never seen
    finally:
        await ledger.aclose()


async def test_the_localnet_refuses_bad_requests_and_keeps_balances_across_a_restart(
    start_localnet,
) -> None:
    localnet = start_localnet()
    owner = Keypair()
    who = owner.pubkey()
    ledger = RpcLedger(localnet.url, "localnet", faucet=True)
    try:
        await ledger.airdrop(who, 3 * SOL)
        one = transfer(
            TransferParams(from_pubkey=who, to_pubkey=Keypair().pubkey(), lamports=10**6)
        )
        unsigned = bytes([0]) + bytes(Message([one], who))  # zero signatures
        signed = Transaction([owner], Message([one], who), await ledger.blockhash())
        async with httpx.AsyncClient() as http:
            bad = {
                b"not json": -32700,  # parse error
                b'{"id":1,"method":"getSlot","params":[]}': -32600,  # no "jsonrpc": "2.0"
                b"[]": -32600,  # an empty batch
                b'{"jsonrpc":"2.0","id":1,"method":"nope","params":[]}': -32601,
                b'{"jsonrpc":"2.0","id":2,"method":"getBalance","params":["xyz"]}': -32602,
                b'{"jsonrpc":"2.0","id":3,"method":"sendTransaction","params":["AAAA",'
                b'{"encoding":"base64"}]}': -32602,
                b'{"jsonrpc":"2.0","id":4,"method":"requestAirdrop","params":["'
                + str(who).encode()
                + b'", 1e30]}': -32602,
                b'{"jsonrpc":"2.0","id":5,"method":[],"params":[]}': -32601,
                # A transaction with no signatures at all.
                b'{"jsonrpc":"2.0","id":6,"method":"sendTransaction","params":["'
                + base64.b64encode(unsigned)
                + b'",{"encoding":"base64","skipPreflight":true}]}': -32602,
            }
            for body, code in bad.items():
                answer = (await http.post(localnet.url, content=body)).json()
                assert answer["error"]["code"] == code, (body, answer)
            # A batch answers each of its requests, in order, the bad ones with errors.
            batch = b'[1, {"jsonrpc":"2.0","id":9,"method":"getSlot","params":[]}]'
            answers = (await http.post(localnet.url, content=batch)).json()
            assert answers[0]["error"]["code"] == -32600
            assert answers[1]["id"] == 9 and isinstance(answers[1]["result"], int)
            # A transaction whose signature is not its signer's, sent without preflight:
            # refused by the runtime, and no status is recorded for that signature.
            forged = Transaction.populate(signed.message, [Signature.new_unique()])
            sent = {"encoding": "base64", "skipPreflight": True}
            body = {"jsonrpc": "2.0", "id": 7, "method": "sendTransaction",
                    "params": [base64.b64encode(bytes(forged)).decode(), sent]}  # fmt: skip
            await http.post(localnet.url, json=body)
            statuses = {"jsonrpc": "2.0", "id": 8, "method": "getSignatureStatuses",
                        "params": [[str(forged.signatures[0])]]}  # fmt: skip
            answer = (await http.post(localnet.url, json=statuses)).json()
            assert answer["result"]["value"] == [None]
        # Sync client in a thread: the server answers 413 before reading the whole body.
        too_big = await trio.to_thread.run_sync(
            lambda: httpx.post(localnet.url, content=b"x" * (1 << 20))
        )
        assert too_big.status_code == 413
        assert await ledger.balance(who) == 3 * SOL  # still up, and nothing changed
        # A transaction sent twice (an answer lost) lands once; the second send is ok.
        await ledger.send(signed)
        await ledger.send(signed)
        assert await ledger.balance(who) == 3 * SOL - 10**6 - FEE
    finally:
        await ledger.aclose()

    # One localnet per directory; a restart keeps every balance.
    second = run_cli("localnet", "--dir", str(localnet.directory), "--port", "0", timeout=20)
    assert second.returncode == 1 and "another localnet already serves" in second.stderr
    assert localnet.stop() == 0
    again = start_localnet(localnet.directory)
    ledger = RpcLedger(again.url, "localnet", faucet=True)
    try:
        assert await ledger.balance(who) == 3 * SOL - 10**6 - FEE
    finally:
        await ledger.aclose()


async def test_an_unreachable_ledger_is_a_clear_error_and_says_a_retry_is_safe(
    tmp_path,
) -> None:
    ledger = RpcLedger(CLOSED_PORT_URL, "rpc", timeout_s=1, confirm_s=0.5)
    try:
        with pytest.raises(LedgerUnreachable, match="did not answer"):
            await ledger.balance(Keypair().pubkey())
        with pytest.raises(LedgerError, match="no faucet"):
            await ledger.airdrop(Keypair().pubkey(), 1)
        payer = Keypair()
        to_self = TransferParams(from_pubkey=payer.pubkey(), to_pubkey=payer.pubkey(), lamports=1)
        tx = Transaction([payer], Message([transfer(to_self)], payer.pubkey()), Hash.default())
        # Nothing tells whether it landed (the ledger does not answer), so it is "may
        # still land", never "expired"; and "I could not ask" is never "not found".
        with pytest.raises(LedgerUnreachable, match="may still land"):
            await ledger.send(tx)
        assert await ledger.blockhash_expired(Hash.default()) is None
        with pytest.raises(LedgerUnreachable):
            await ledger.landed(str(Signature.default()))
        # The watcher's round survives a ledger that does not answer.
        async with open_channel_book(tmp_path / "channels.db") as book:
            assert await settle_due(book, ledger, {}, 3600) == []
    finally:
        await ledger.aclose()
