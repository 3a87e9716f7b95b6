"""channel: off-chain payments per second, and channel open and close latency.

A payment is what a paid task costs settlement: the payer's node signs the new
state and stores it (`ChannelBook.pay`), the payee's node checks it (signature,
message, amounts) and stores it (`ChannelBook.accept`), and the payer counts it
used on the receipt (`ChannelBook.settle`): three writes, each durable (SQLite,
synchronous=FULL) before it returns. ``payments_per_s`` has 8 channels paying at
once (one payer, one payee, as 8 users' tasks would); ``one_channel_payments_per_s``
one channel, one payment at a time. Opening (three accounts' transaction, then
reading the nonce) and closing (check, countersign, simulate, send) are timed on
the embedded ledger (``open_ms``, ``close_ms``, p50) and on a localnet served in
this process, reached over JSON-RPC (``localnet_open_ms``, ``localnet_close_ms``).
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from solders.keypair import Keypair

from mercato.node import serve_localnet
from mercato.settlement import (
    NONCE_ACCOUNT_SIZE,
    STAKE_ACCOUNT_SIZE,
    Ledger,
    RpcLedger,
    check_state,
    countersign,
    open_channel_book,
    open_embedded_ledger,
    open_transaction,
    payable,
    read_nonce,
    sign_state,
)

SOL = 1_000_000_000
PRICE = 1_000_000
CHANNELS = 8
PAYMENTS = 2000  # in all, across the channels
ROUNDS = 30  # opens and closes timed


async def _open(ledger: Ledger, payer: Keypair, payee: Keypair) -> tuple[Any, Any]:
    tx, terms = open_transaction(
        payer, payee.pubkey(), 100 * SOL, await ledger.now() + 86_400,
        await ledger.rent(STAKE_ACCOUNT_SIZE), await ledger.rent(NONCE_ACCOUNT_SIZE),
        await ledger.blockhash(),
    )  # fmt: skip
    await ledger.send(tx)
    nonce = read_nonce((await ledger.account(terms.nonce)).data)[1]
    return terms, nonce


async def _open_close(ledger: Ledger, faucet: Any) -> tuple[float, float]:
    payer, payee = Keypair(), Keypair()
    for who in (payer, payee):
        await faucet(who.pubkey(), 1_000 * SOL)
    opens, closes = [], []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        terms, nonce = await _open(ledger, payer, payee)
        opens.append(time.perf_counter() - started)
        owed = {payee.pubkey(): PRICE}
        state = sign_state(terms, nonce, owed, payer)
        started = time.perf_counter()
        tx = countersign(check_state(terms, nonce, payable(owed, payee.pubkey()), state), payee)
        await ledger.simulate(tx)
        await ledger.send(tx)
        closes.append(time.perf_counter() - started)
    return statistics.median(opens) * 1000, statistics.median(closes) * 1000


async def _payments(root: Path, ledger: Ledger, channels: int, payments: int) -> float:
    payer, payee = Keypair(), Keypair()
    await ledger.airdrop(payer.pubkey(), 10_000 * SOL)
    async with (
        open_channel_book(root / f"payer-{channels}.db") as payer_book,
        open_channel_book(root / f"payee-{channels}.db") as payee_book,
    ):
        stakes = []
        for _ in range(channels):
            terms, nonce = await _open(ledger, payer, payee)
            await payer_book.add(terms, "payer", "payee", nonce)
            await payee_book.add(terms, "payee", "payer", nonce)
            stakes.append(terms.stake)
        amounts = {payee.pubkey(): PRICE}

        async def pay(stake: Any, n: int) -> None:
            for _ in range(n):
                channel, state, _ = await payer_book.pay(stake, amounts, payer)
                await payee_book.accept(stake, amounts, state, channel.owed)
                await payer_book.settle(stake, amounts)  # the task's receipt came back

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for stake in stakes:
                nursery.start_soon(pay, stake, payments // channels)
        elapsed = time.perf_counter() - started
        held = sum(payee_book.get(s).paid for s in stakes)
        assert held == (payments // channels) * channels * PRICE, "a payment went missing"
        return (payments // channels) * channels / elapsed


async def _run(root: Path) -> dict[str, Any]:
    async with open_embedded_ledger(root / "ledger.db") as ledger:
        concurrent = await _payments(root, ledger, CHANNELS, PAYMENTS)
        single = await _payments(root, ledger, 1, PAYMENTS // 2)
        open_ms, close_ms = await _open_close(ledger, ledger.airdrop)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_localnet, root / "localnet", "127.0.0.1", 0)
        remote = RpcLedger(url, "localnet", faucet=True)
        try:
            net_open_ms, net_close_ms = await _open_close(remote, remote.airdrop)
        finally:
            await remote.aclose()
        nursery.cancel_scope.cancel()
    return {
        "payments_per_s": round(concurrent),
        "one_channel_payments_per_s": round(single),
        "open_ms": round(open_ms, 2),
        "close_ms": round(close_ms, 2),
        "localnet_open_ms": round(net_open_ms, 2),
        "localnet_close_ms": round(net_close_ms, 2),
        "targets": {"payments_per_s": ">= 2000"},
    }


def run() -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="mercato-channel-"))
    try:
        return trio.run(_run, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
