"""A payee killed between receiving a state and acknowledging it loses nothing.

The payee is a real process: it takes states from the payer in a tight loop
(the book's `accept`: check, store durably, count the task) and acknowledges
each one on stdout only after `accept` returned. It is killed with SIGKILL at
an arbitrary point, three times over. (SIGKILL spares the page cache, so this
proves the order of store and acknowledgement, not the fsync.) After each kill the book on disk must
hold a state for at least everything acknowledged, and that state must close
on the real runtime for exactly what it says.
"""

import subprocess
import sys
from pathlib import Path

import trio
from solders.keypair import Keypair

from mercato.settlement import (
    check_state,
    countersign,
    open_channel_book,
    open_embedded_ledger,
    payable,
)

from .test_book import opened
from .test_channel import FEE, SOL

PRICE = 1_000_000
PAYEE_LOOP = """
import sys, trio
from solders.keypair import Keypair
from mercato.settlement import open_channel_book, sign_state, payable

async def main(path, stake, payer_seed):
    payer = Keypair.from_seed(bytes.fromhex(payer_seed))
    async with open_channel_book(path) as book:
        channel = book.get(stake)
        payee = channel.terms.payee
        while True:
            owed = {payee: channel.owed.get(payee, 0) + PRICE}
            state = sign_state(channel.terms, channel.nonce, payable(owed, payee), payer)
            channel = await book.accept(channel.terms.stake, {payee: PRICE}, state, owed)
            print(channel.owed[payee], flush=True)  # acknowledged only once stored

trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3])
""".replace("PRICE", str(PRICE))


def kill_after(path: Path, stake: str, payer: Keypair, acks: int) -> int:
    """Run the payee loop until it acknowledged ``acks`` states, then SIGKILL it;
    the last amount it acknowledged."""
    seed = bytes(payer)[:32].hex()
    last = 0
    with subprocess.Popen(
        [sys.executable, "-c", PAYEE_LOOP, str(path), stake, seed],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            for _ in range(acks):
                line = proc.stdout.readline()
                assert line, proc.stderr.read()
                last = int(line)
        finally:
            proc.kill()
            proc.wait(timeout=10)
        # It may have acknowledged more between the last read and the kill.
        for line in proc.stdout.read().splitlines():
            last = int(line) if line.strip().isdigit() else last
    return last


async def test_a_payee_killed_mid_payment_restarts_with_every_acknowledged_state(
    tmp_path: Path,
) -> None:
    async with open_embedded_ledger(tmp_path / "ledger.db") as ledger:
        payer, payee = Keypair(), Keypair()
        for who in (payer, payee):
            await ledger.airdrop(who.pubkey(), 10 * SOL)
        terms, nonce = await opened(ledger, payer, payee, deposit=2 * SOL)
        book_path = tmp_path / "channels.db"
        async with open_channel_book(book_path) as book:
            await book.add(terms, "payee", "the payer's peer id", nonce)

        acknowledged = 0
        for acks in (7, 31, 64):  # a different moment each time
            acknowledged = await trio.to_thread.run_sync(
                kill_after, book_path, str(terms.stake), payer, acks
            )
            async with open_channel_book(book_path) as book:
                channel = book.get(terms.stake)
                stored = channel.owed[payee.pubkey()]
                # Everything acknowledged is there; at most the one in flight is more.
                assert acknowledged <= stored <= acknowledged + PRICE
                assert channel.settled[payee.pubkey()] == stored  # each task counted once
                check_state(terms, channel.nonce, payable(channel.owed, payee.pubkey()),
                            channel.state)  # fmt: skip

        # The state the book kept closes on the runtime, for exactly what it says.
        before = await ledger.balance(payee.pubkey())
        async with open_channel_book(book_path) as book:
            channel = book.get(terms.stake)
            checked = check_state(
                terms, channel.nonce, payable(channel.owed, payee.pubkey()), channel.state
            )
            await ledger.send(countersign(checked, payee))
        paid = channel.owed[payee.pubkey()]
        assert paid >= acknowledged >= (7 + 31 + 64) * PRICE
        assert await ledger.balance(payee.pubkey()) - before == paid - 2 * FEE
