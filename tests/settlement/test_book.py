"""The channel book and the watcher, on the real runtime (LiteSVM)."""

from dataclasses import replace
from pathlib import Path

import pytest
import trio
from solders import system_program as sp
from solders.keypair import Keypair
from solders.message import Message
from solders.transaction import Transaction

from mercato.settlement import (
    MIN_PAYOUT,
    NONCE_ACCOUNT_SIZE,
    STAKE_ACCOUNT_SIZE,
    ChannelError,
    check_state,
    countersign,
    held,
    open_channel_book,
    open_embedded_ledger,
    open_transaction,
    payable,
    payable_v1,
    read_nonce,
    settle_due,
    sign_state,
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


async def test_an_opening_found_on_the_ledger_is_open_and_one_that_never_landed_fails(
    world, tmp_path: Path
) -> None:
    ledger, payer, payee, _ = world
    keys = {payer.pubkey(): payer}
    async with open_channel_book(tmp_path / "payer.db") as book:
        # The payer recorded two openings, then crashed: one was sent, one was not.
        sent = []
        for _ in range(2):
            blockhash = await ledger.blockhash()
            tx, terms = open_transaction(
                payer, payee.pubkey(), SOL, await ledger.now() + 3600,
                await ledger.rent(STAKE_ACCOUNT_SIZE), await ledger.rent(NONCE_ACCOUNT_SIZE),
                blockhash,
            )  # fmt: skip
            await book.add(terms, "payer", "p", blockhash, "opening")
            sent.append((tx, terms))
        landed, lost = sent[1], sent[0]
        await ledger.send(landed[0])  # the later one: its blockhash is the latest
        done = dict(await settle_due(book, ledger, keys, margin_s=60))
        assert done == {str(landed[1].stake): "opened", str(lost[1].stake): "failed"}
        opened_now = book.get(landed[1].stake)
        nonce = read_nonce((await ledger.account(landed[1].nonce)).data)[1]
        assert opened_now.status == "open" and opened_now.nonce == nonce
        # The payer's own confirmation, arriving after the watcher's: no error.
        assert await book.opened(landed[1].stake, nonce) == opened_now
        assert book.get(lost[1].stake).status == "failed"
        # A channel whose key this node no longer holds is left alone, not a crash.
        assert await settle_due(book, ledger, {}, margin_s=60) == []
        assert await ledger.account(lost[1].stake) is None  # it never can land now


async def test_a_close_that_landed_unrecorded_is_found_and_a_closing_channel_takes_no_payment(
    world, tmp_path: Path
) -> None:
    ledger, payer, payee, _ = world
    terms, nonce = await opened(ledger, payer, payee, deposit=SOL)
    async with open_channel_book(tmp_path / "payee.db") as book:
        await book.add(terms, "payee", "u", nonce)
        owed = {payee.pubkey(): 2 * MIN_PAYOUT}
        state = sign_state(terms, nonce, owed, payer)
        await book.accept(terms.stake, owed, state, owed)
        closing = await book.begin_close(terms.stake)
        with pytest.raises(ChannelError, match="closing"):
            await book.accept(terms.stake, {payee.pubkey(): 1}, state, owed)
        # The close lands, but the process dies before the book hears of it.
        checked = check_state(terms, nonce, payable(closing.owed, payee.pubkey()), state)
        await ledger.send(countersign(checked, payee))
        before = await ledger.balance(payee.pubkey())
        # After the restart the watcher resumes the close: the nonce moved, so it
        # landed; nothing is sent twice.
        done = await settle_due(book, ledger, {payee.pubkey(): payee}, margin_s=60)
        assert done == [(str(terms.stake), "closed")]
        assert await ledger.balance(payee.pubkey()) == before
        assert book.get(terms.stake).status == "closed"


async def test_a_write_that_fails_fails_every_save_in_its_batch(world, tmp_path: Path) -> None:
    ledger, payer, payee, _ = world
    first, nonce1 = await opened(ledger, payer, payee, deposit=SOL)
    second, nonce2 = await opened(ledger, payer, payee, deposit=SOL)
    path = tmp_path / "payer.db"
    async with open_channel_book(path) as book:
        outcomes: dict[str, object] = {}

        async def add(terms, nonce, peer: str) -> None:
            try:
                await book.add(terms, "payer", peer, nonce)
                outcomes[peer] = "saved"
            except Exception as exc:
                outcomes[peer] = exc

        async with trio.open_nursery() as nursery:  # one transaction for both rows
            nursery.start_soon(add, first, nonce1, "\ud800")  # SQLite cannot encode it
            nursery.start_soon(add, second, nonce2, "good")
    async with open_channel_book(path) as book:
        on_disk = set(book.channels)
    # Nobody is told "saved" for a row that is not on disk.
    for terms, peer in ((first, "\ud800"), (second, "good")):
        assert (outcomes[peer] == "saved") == (str(terms.stake) in on_disk), outcomes
    assert outcomes["\ud800"] != "saved"


async def paid_tasks(payers, payees, terms, payer, amounts, tasks: int):
    for _ in range(tasks):
        paying, state, _ = await payers.pay(terms.stake, amounts, payer)
        await payees.accept(terms.stake, amounts, state, paying.owed)
        await payers.settle(terms.stake, amounts)


async def test_a_royalty_too_small_for_a_new_account_reaches_its_creator_after_the_close(
    world, tmp_path: Path
) -> None:
    """The README's example price: 1,000 lamports a task, 500 bps to the creator."""
    ledger, payer, payee, creator = world
    newcomer = Keypair()  # a second creator, with no account on the ledger yet
    await ledger.airdrop(creator.pubkey(), SOL)  # the first one's wallet exists
    terms, nonce = await opened(ledger, payer, payee, deposit=SOL)
    keys = {payee.pubkey(): payee}
    async with (
        open_channel_book(tmp_path / "payer.db") as payers,
        open_channel_book(tmp_path / "payee.db") as payees,
    ):
        await payers.add(terms, "payer", "the-provider", nonce)
        await payees.add(terms, "payee", "the-user", nonce)
        share, royalty = split(1000, 500)
        assert (share, royalty) == (950, 50)
        for who in (creator, newcomer):
            amounts = {payee.pubkey(): share, who.pubkey(): royalty}
            await paid_tasks(payers, payees, terms, payer, amounts, 20)
        before = {k: await ledger.balance(k.pubkey()) for k in (payee, creator, newcomer)}
        await ledger.set_time(terms.expires - 300)
        done = await settle_due(payees, ledger, keys, margin_s=600)
        assert done == [(str(terms.stake), "closed"), (str(creator.pubkey()), "forwarded")]
        after = {k: await ledger.balance(k.pubkey()) for k in (payee, creator, newcomer)}
        assert after[creator] - before[creator] == 20 * royalty  # exactly what it was owed
        # The provider received its share and the newcomer's royalty, which it holds,
        # and paid the close (two signatures) and the forward (one).
        assert after[payee] - before[payee] == 40 * share + 20 * royalty - 3 * FEE
        assert after[newcomer] == 0
        held_now = payees.due(payee.pubkey())
        assert [(h.recipient, h.amount) for h in held_now] == [(newcomer.pubkey(), 1000)]
    # Still held after a restart; forwarded once the newcomer's account exists.
    async with open_channel_book(tmp_path / "payee.db") as payees:
        assert await settle_due(payees, ledger, keys, margin_s=600) == []
        await ledger.airdrop(newcomer.pubkey(), MIN_PAYOUT)
        done = await settle_due(payees, ledger, keys, margin_s=600)
        assert done == [(str(newcomer.pubkey()), "forwarded")]
        assert await ledger.balance(newcomer.pubkey()) == MIN_PAYOUT + 20 * royalty
        assert payees.due(payee.pubkey()) == []
        assert await settle_due(payees, ledger, keys, margin_s=600) == []  # never twice


async def test_a_forward_cut_short_by_a_crash_is_paid_exactly_once(world, tmp_path: Path) -> None:
    ledger, payer, payee, creator = world
    await ledger.airdrop(creator.pubkey(), SOL)
    keys = {payee.pubkey(): payee}
    for landed_before_crash in (False, True):
        terms, nonce = await opened(ledger, payer, payee, deposit=SOL)
        path = tmp_path / f"payee-{landed_before_crash}.db"
        async with (
            open_channel_book(tmp_path / f"payer-{landed_before_crash}.db") as payers,
            open_channel_book(path) as payees,
        ):
            await payers.add(terms, "payer", "p", nonce)
            await payees.add(terms, "payee", "u", nonce)
            amounts = {payee.pubkey(): 900, creator.pubkey(): 100}
            await paid_tasks(payers, payees, terms, payer, amounts, 3)
            channel = await payees.begin_close(terms.stake)
            await ledger.send(
                countersign(
                    check_state(terms, nonce, payable(channel.owed, payee.pubkey()), channel.state),
                    payee,
                )
            )
            await payees.closed(terms.stake, held(channel.owed, payee.pubkey()))
            # The forward is stored as sending; the process dies before or after it lands.
            rows = payees.due(payee.pubkey())
            blockhash = await ledger.blockhash()
            transfer = sp.transfer(
                {"from_pubkey": payee.pubkey(), "to_pubkey": creator.pubkey(), "lamports": 300}
            )
            message = Message.new_with_blockhash([transfer], payee.pubkey(), blockhash)
            forward = Transaction([payee], message, blockhash)
            await payees.sending(rows, str(forward.signatures[0]), bytes(forward))
            if landed_before_crash:
                await ledger.send(forward)
        before = await ledger.balance(creator.pubkey())
        async with open_channel_book(path) as payees:  # the restart
            done = await settle_due(payees, ledger, keys, margin_s=600)
            assert done == [(str(creator.pubkey()), "forwarded")]
            assert await settle_due(payees, ledger, keys, margin_s=600) == []
            assert {h.status for h in payees.held.values()} == {"paid"}
        paid_now = 0 if landed_before_crash else 300
        assert await ledger.balance(creator.pubkey()) == before + paid_now


async def test_a_state_signed_before_version_2_still_closes(world, tmp_path: Path) -> None:
    ledger, payer, payee, creator = world
    terms, nonce = await opened(ledger, payer, payee, deposit=SOL)
    async with open_channel_book(tmp_path / "payee.db") as payees:
        channel = await payees.add(terms, "payee", "u", nonce)
        owed = {payee.pubkey(): 9000, creator.pubkey(): 1000}
        old = sign_state(terms, nonce, payable_v1(owed, payee.pubkey()), payer)  # no royalty
        await payees._save(replace(channel, owed=owed, settled=owed, state=old))
    async with open_channel_book(tmp_path / "payee.db") as payees:  # the upgraded node
        before = await ledger.balance(payee.pubkey())
        await ledger.set_time(terms.expires - 10)
        done = await settle_due(payees, ledger, {payee.pubkey(): payee}, margin_s=600)
        assert done == [(str(terms.stake), "closed")]
        assert await ledger.balance(payee.pubkey()) == before + 9000 - 2 * FEE
        assert payees.held == {}  # that state paid it nothing to hold
