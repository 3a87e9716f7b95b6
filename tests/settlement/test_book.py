"""The channel book and the watcher, on the real runtime (LiteSVM)."""

from pathlib import Path

import pytest
from solders.keypair import Keypair

from settlement import (
    MIN_PAYOUT,
    NONCE_ACCOUNT_SIZE,
    STAKE_ACCOUNT_SIZE,
    ChannelError,
    open_channel_book,
    open_embedded_ledger,
    open_transaction,
    read_nonce,
    settle_due,
    split,
)

SOL = 1_000_000_000
FEE = 5000


@pytest.fixture
async def world(tmp_path: Path):
    async with open_embedded_ledger(tmp_path / "ledger.db") as ledger:
        payer, payee, creator = Keypair(), Keypair(), Keypair()
        for who in (payer, payee):
            await ledger.airdrop(who.pubkey(), 10 * SOL)
        yield ledger, payer, payee, creator


async def opened(ledger, payer, payee, lasts=3600, deposit=2 * SOL):
    tx, terms = open_transaction(
        payer, payee.pubkey(), deposit, await ledger.now() + lasts,
        await ledger.rent(STAKE_ACCOUNT_SIZE), await ledger.rent(NONCE_ACCOUNT_SIZE),
        await ledger.blockhash(),
    )  # fmt: skip
    await ledger.send(tx)
    nonce = read_nonce((await ledger.account(terms.nonce)).data)[1]
    return terms, nonce


async def test_payments_flow_royalties_wait_until_payable_and_the_watcher_closes(
    world, tmp_path: Path
) -> None:
    ledger, payer, payee, creator = world
    terms, nonce = await opened(ledger, payer, payee)
    async with (
        open_channel_book(tmp_path / "payer.db") as payers,
        open_channel_book(tmp_path / "payee.db") as payees,
    ):
        await payers.add(terms, "payer", "the-provider", nonce)
        await payees.add(terms, "payee", "the-user", nonce)
        price = 20_000_000  # 2.5 % royalty: 500,000 a task, under the minimum at first
        to_payee, royalty = split(price, 250)
        amounts = {payee.pubkey(): to_payee, creator.pubkey(): royalty}
        for task in range(3):
            paying, state, _ = await payers.pay(terms.stake, amounts, payer)
            accepted = await payees.accept(terms.stake, amounts, state, paying.owed)
            await payers.settle(terms.stake, amounts)  # the receipt came back
            waiting = accepted.owed[creator.pubkey()] < MIN_PAYOUT
            assert waiting == (task == 0)  # 500,000 waits; 1,000,000 can be paid
        # A payment that never arrived is credit: the next task pays nothing more.
        lost, _, _ = await payers.pay(terms.stake, amounts, payer)
        again, state, used = await payers.pay(terms.stake, amounts, payer)
        assert again.owed == lost.owed and used == amounts  # all of it from credit
        await payees.accept(terms.stake, amounts, state, again.owed)
        await payers.settle(terms.stake, amounts)
        with pytest.raises(ChannelError, match="does not cover"):  # the same state again
            await payees.accept(terms.stake, amounts, state, again.owed)
        # Not yet due: nothing happens. Within the margin of T, the payee's node closes.
        assert await settle_due(payees, ledger, {payee.pubkey(): payee}, margin_s=600) == []
        await ledger.set_time(terms.expires - 300)
        before = await ledger.balance(payee.pubkey())
        done = await settle_due(payees, ledger, {payee.pubkey(): payee}, margin_s=600)
        assert done == [(str(terms.stake), "closed")]
        assert await ledger.balance(payee.pubkey()) == before + 4 * 19_500_000 - 2 * FEE
        assert await ledger.balance(creator.pubkey()) == 2_000_000
        # After T the payer's node takes back what the close left.
        await ledger.set_time(terms.expires + 1)
        before = await ledger.balance(payer.pubkey())
        left = await ledger.balance(terms.stake)
        assert await settle_due(payers, ledger, {payer.pubkey(): payer}, margin_s=600) == [
            (str(terms.stake), "refunded")
        ]
        assert await ledger.balance(payer.pubkey()) == before + left - FEE


async def test_a_bad_state_changes_nothing_and_the_book_survives_a_restart(
    world, tmp_path: Path
) -> None:
    ledger, payer, payee, _ = world
    terms, nonce = await opened(ledger, payer, payee, deposit=SOL)
    async with open_channel_book(tmp_path / "payer.db") as payers:
        await payers.add(terms, "payer", "p", nonce)
        paying, state, _ = await payers.pay(terms.stake, {payee.pubkey(): 1000}, payer)
        with pytest.raises(ChannelError, match="exceed the deposit"):
            await payers.pay(terms.stake, {payee.pubkey(): SOL + 1}, payer)
        assert payers.get(terms.stake).paid == 1000  # the refused payment left no trace
    async with open_channel_book(tmp_path / "payee.db") as payees:
        await payees.add(terms, "payee", "u", nonce)
        with pytest.raises(ChannelError, match="does not pay"):  # claims more than signed
            await payees.accept(terms.stake, {payee.pubkey(): 2000}, state)
        assert payees.get(terms.stake).state is None
        with pytest.raises(ChannelError, match="does not cover"):  # a task worth more
            await payees.accept(terms.stake, {payee.pubkey(): 2000}, state, paying.owed)
        await payees.accept(terms.stake, {payee.pubkey(): 1000}, state, paying.owed)
    async with open_channel_book(tmp_path / "payee.db") as payees:  # a restart
        kept = payees.get(terms.stake)
        assert kept.state == state and kept.owed == {payee.pubkey(): 1000}
        await ledger.set_time(terms.expires - 1)
        done = await settle_due(payees, ledger, {payee.pubkey(): payee}, margin_s=60)
        assert done == [(str(terms.stake), "closed")]
        with pytest.raises(ChannelError, match="closed"):
            await payees.accept(terms.stake, {payee.pubkey(): 1}, state)
