"""Payment channels on the real Solana runtime (LiteSVM, embedded in the test)."""

import struct
from pathlib import Path

import pytest
from solders import system_program as sp
from solders import sysvar
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.transaction import Transaction

from mercato.settlement import (
    MAX_RECIPIENTS,
    MAX_TRANSACTION_BYTES,
    MIN_PAYOUT,
    NONCE_ACCOUNT_SIZE,
    STAKE_ACCOUNT_SIZE,
    ChannelError,
    LedgerError,
    LockupInForce,
    check_channel,
    check_stake,
    check_state,
    countersign,
    open_embedded_ledger,
    open_transaction,
    read_nonce,
    read_stake,
    refund_transaction,
    sign_state,
    split,
)
from mercato.settlement._channel import no_staker

SOL = 1_000_000_000
FEE = 5000  # lamports per signature


async def open_channel(ledger, payer, payee, deposit=2 * SOL, lasts=3600):
    expires = await ledger.now() + lasts
    tx, terms = open_transaction(
        payer, payee.pubkey(), deposit, expires,
        await ledger.rent(STAKE_ACCOUNT_SIZE), await ledger.rent(NONCE_ACCOUNT_SIZE),
        await ledger.blockhash(),
    )  # fmt: skip
    await ledger.send(tx)
    return terms


async def nonce_of(ledger, terms):
    return read_nonce((await ledger.account(terms.nonce)).data)[1]


@pytest.fixture
async def ledger(tmp_path: Path):
    async with open_embedded_ledger(tmp_path / "ledger.db") as opened:
        yield opened


@pytest.fixture
async def parties(ledger):
    payer, payee, creator = Keypair(), Keypair(), Keypair()
    for who in (payer, payee, creator):
        await ledger.airdrop(who.pubkey(), 10 * SOL)
    return payer, payee, creator


async def test_the_latest_state_pays_payee_and_creator_and_an_older_one_cannot_be_replayed(
    ledger, parties
) -> None:
    payer, payee, creator = parties
    terms = await open_channel(ledger, payer, payee)
    before = {k: await ledger.balance(k.pubkey()) for k in parties}
    nonce = await nonce_of(ledger, terms)
    states = []
    for price_so_far in (300_000_000, 700_000_000):  # cumulative
        to_payee, royalty = split(price_so_far, 250)
        payouts = {payee.pubkey(): to_payee, creator.pubkey(): royalty}
        state = sign_state(terms, nonce, payouts, payer)
        states.append(check_state(terms, nonce, payouts, state))  # before the payee serves
    await ledger.simulate(countersign(states[-1], payee))
    await ledger.send(countersign(states[-1], payee))
    after = {k: await ledger.balance(k.pubkey()) for k in parties}
    assert after[payee] - before[payee] == 682_500_000 - 2 * FEE  # the payee pays the fee
    assert after[creator] - before[creator] == 17_500_000
    assert after[payer] - before[payer] == 2 * SOL - 700_000_000
    with pytest.raises(LedgerError):  # the nonce moved on: the older state is void
        await ledger.send(countersign(states[0], payee))


async def test_the_payer_cannot_take_the_deposit_back_before_the_lockup_ends(
    ledger, parties
) -> None:
    payer, payee, _ = parties
    terms = await open_channel(ledger, payer, payee, lasts=600)
    left = await ledger.balance(terms.stake)
    with pytest.raises(LockupInForce):
        await ledger.send(refund_transaction(terms, payer, left, await ledger.blockhash()))
    await ledger.set_time(terms.expires + 1)
    before = await ledger.balance(payer.pubkey())
    await ledger.send(refund_transaction(terms, payer, left, await ledger.blockhash()))
    assert await ledger.balance(payer.pubkey()) == before + left - FEE
    assert await ledger.account(terms.stake) is None


async def test_a_stray_lamport_does_not_block_the_close(ledger, parties) -> None:
    payer, payee, _ = parties
    terms = await open_channel(ledger, payer, payee)
    nonce = await nonce_of(ledger, terms)
    payouts = {payee.pubkey(): 1_000_000}
    state = check_state(terms, nonce, payouts, sign_state(terms, nonce, payouts, payer))
    grief = Transaction(
        [payer],
        Message.new_with_blockhash(
            [sp.transfer({"from_pubkey": payer.pubkey(), "to_pubkey": terms.stake, "lamports": 1})],
            payer.pubkey(),
            await ledger.blockhash(),
        ),
        await ledger.blockhash(),
    )
    await ledger.send(grief)
    before = await ledger.balance(payee.pubkey())
    await ledger.send(countersign(state, payee))
    assert await ledger.balance(payee.pubkey()) == before + 1_000_000 - 2 * FEE


async def test_the_payee_refuses_states_that_do_not_pay_as_agreed(ledger, parties) -> None:
    payer, payee, creator = parties
    terms = await open_channel(ledger, payer, payee)
    nonce = await nonce_of(ledger, terms)
    agreed = {payee.pubkey(): 1000, creator.pubkey(): MIN_PAYOUT}
    good = sign_state(terms, nonce, agreed, payer)
    with pytest.raises(ChannelError, match="does not pay"):
        check_state(terms, nonce, {payee.pubkey(): 2000, creator.pubkey(): MIN_PAYOUT}, good)
    with pytest.raises(ChannelError, match="does not pay"):  # the royalty kept by the payee
        check_state(terms, nonce, {payee.pubkey(): 1000 + MIN_PAYOUT}, good)
    impostor = Keypair()
    forged = bytearray(good)
    forged[65:129] = bytes(impostor.sign_message(b"not the message"))  # the payer's slot
    with pytest.raises(ChannelError, match="not signed"):
        check_state(terms, nonce, agreed, bytes(forged))
    one_signature = bytes([1]) + good[65:129] + good[129:]
    with pytest.raises(ChannelError):
        check_state(terms, nonce, agreed, one_signature)
    three = bytes([3]) + good[1:129] + bytes(64) + good[129:]
    with pytest.raises(ChannelError):
        check_state(terms, nonce, agreed, three)
    with pytest.raises(ChannelError, match="not the payee"):
        countersign(check_state(terms, nonce, agreed, good), creator)
    with pytest.raises(ChannelError, match="not a Solana transaction"):
        check_state(terms, nonce, agreed, b"\x01junk")
    with pytest.raises(ChannelError, match="larger"):
        check_state(terms, nonce, agreed, good + bytes(MAX_TRANSACTION_BYTES))
    with pytest.raises(ChannelError, match="exceed the deposit"):
        sign_state(terms, nonce, {payee.pubkey(): terms.deposit + 1}, payer)
    with pytest.raises(ChannelError, match="only the channel's payer"):
        sign_state(terms, nonce, agreed, payee)
    # Payouts the runtime would refuse at close time are refused when signing.
    for bad_recipient in (terms.stake, terms.nonce, payer.pubkey(), sysvar.CLOCK):
        with pytest.raises(ChannelError, match="cannot be paid"):
            sign_state(terms, nonce, {payee.pubkey(): 1000, bad_recipient: MIN_PAYOUT}, payer)
    with pytest.raises(ChannelError, match="must wait"):  # a new account could not exist
        sign_state(terms, nonce, {payee.pubkey(): 1000, Keypair().pubkey(): 10}, payer)
    with pytest.raises(ChannelError, match="at most"):
        sign_state(terms, nonce, {Keypair().pubkey(): MIN_PAYOUT for _ in range(9)}, payer)
    with pytest.raises(ChannelError):
        split(100, 10_001)
    assert split(1000, 250) == (975, 25)


async def test_a_state_for_the_most_recipients_fits_in_a_transaction(ledger, parties) -> None:
    payer, payee, _ = parties
    terms = await open_channel(ledger, payer, payee)
    nonce = await nonce_of(ledger, terms)
    creators = [Keypair().pubkey() for _ in range(MAX_RECIPIENTS - 1)]
    payouts = {payee.pubkey(): 5 * SOL // 10, **{c: SOL // 100 for c in creators}}
    state = sign_state(terms, nonce, payouts, payer)
    assert len(state) <= MAX_TRANSACTION_BYTES
    await ledger.send(countersign(check_state(terms, nonce, payouts, state), payee))
    for creator in creators:
        assert await ledger.balance(creator) == SOL // 100


async def test_a_payer_that_delegates_the_deposit_is_caught_by_the_stake_check(
    ledger, parties
) -> None:
    payer, payee, _ = parties
    terms = await open_channel(ledger, payer, payee)
    account = await ledger.account(terms.stake)
    check_stake(terms, read_stake(account.data), account.lamports)
    # The payer, as withdrawer, makes itself the staker and delegates the stake.
    stake_program = Pubkey.from_string("Stake11111111111111111111111111111111111111")
    vote_program = Pubkey.from_string("Vote111111111111111111111111111111111111111")
    vote, node = Keypair(), Keypair()
    init_vote = struct.pack("<I", 0) + bytes(node.pubkey()) * 3 + bytes([0])
    authorize = struct.pack("<I", 1) + bytes(payer.pubkey()) + struct.pack("<I", 0)
    blockhash = await ledger.blockhash()
    instructions = [
        sp.create_account(
            {"from_pubkey": payer.pubkey(), "to_pubkey": vote.pubkey(), "space": 3762,
             "lamports": await ledger.rent(3762), "owner": vote_program}
        ),
        Instruction(vote_program, init_vote, [
            AccountMeta(vote.pubkey(), False, True), AccountMeta(sysvar.RENT, False, False),
            AccountMeta(sysvar.CLOCK, False, False), AccountMeta(node.pubkey(), True, False)]),
        Instruction(stake_program, authorize, [
            AccountMeta(terms.stake, False, True), AccountMeta(sysvar.CLOCK, False, False),
            AccountMeta(payer.pubkey(), True, False)]),
        Instruction(stake_program, struct.pack("<I", 2), [
            AccountMeta(terms.stake, False, True), AccountMeta(vote.pubkey(), False, False),
            AccountMeta(sysvar.CLOCK, False, False),
            AccountMeta(sysvar.STAKE_HISTORY, False, False),
            AccountMeta(Pubkey.from_string("StakeConfig11111111111111111111111111111111"),
                        False, False),
            AccountMeta(payer.pubkey(), True, False)]),
    ]  # fmt: skip
    message = Message.new_with_blockhash(instructions, payer.pubkey(), blockhash)
    await ledger.send(Transaction([payer, vote, node], message, blockhash))
    account = await ledger.account(terms.stake)
    with pytest.raises(ChannelError, match=r"delegated|staker"):
        check_stake(terms, read_stake(account.data), account.lamports)


async def test_a_restarted_embedded_ledger_keeps_balances_and_open_channels(
    tmp_path: Path,
) -> None:
    payer, payee = Keypair(), Keypair()
    async with open_embedded_ledger(tmp_path / "ledger.db") as ledger:
        await ledger.airdrop(payer.pubkey(), 10 * SOL)
        await ledger.airdrop(payee.pubkey(), SOL)
        terms = await open_channel(ledger, payer, payee)
        nonce = await nonce_of(ledger, terms)
        payouts = {payee.pubkey(): SOL // 2}
        state = check_state(terms, nonce, payouts, sign_state(terms, nonce, payouts, payer))
        payer_balance = await ledger.balance(payer.pubkey())
    async with open_embedded_ledger(tmp_path / "ledger.db") as ledger:
        assert await ledger.balance(payer.pubkey()) == payer_balance
        await ledger.send(countersign(state, payee))  # the channel survived the restart
        assert await ledger.balance(payee.pubkey()) == SOL + SOL // 2 - 2 * FEE


async def test_a_payer_that_splits_the_deposit_away_is_caught_by_the_channel_check(
    ledger, parties
) -> None:
    payer, payee, _ = parties
    terms = await open_channel(ledger, payer, payee)

    async def check() -> None:
        stake = await ledger.account(terms.stake)
        authority, _ = read_nonce((await ledger.account(terms.nonce)).data)
        check_channel(terms, stake.lamports, read_stake(stake.data), authority, await ledger.now())

    await check()
    stake_program = Pubkey.from_string("Stake11111111111111111111111111111111111111")

    def authorize(stake, new):
        return Instruction(stake_program, struct.pack("<I", 1) + bytes(new) + struct.pack(
            "<I", 0), [AccountMeta(stake, False, True), AccountMeta(sysvar.CLOCK, False, False),
                       AccountMeta(payer.pubkey(), True, False)])  # fmt: skip

    away, rent = Keypair(), await ledger.rent(STAKE_ACCOUNT_SIZE)
    moved = (await ledger.balance(terms.stake)) - rent
    instructions = [
        sp.create_account({"from_pubkey": payer.pubkey(), "to_pubkey": away.pubkey(),
                           "lamports": rent, "space": STAKE_ACCOUNT_SIZE, "owner": stake_program}),
        authorize(terms.stake, payer.pubkey()),
        Instruction(stake_program, struct.pack("<IQ", 3, moved), [
            AccountMeta(terms.stake, False, True), AccountMeta(away.pubkey(), False, True),
            AccountMeta(payer.pubkey(), True, False)]),
        authorize(terms.stake, no_staker(terms.stake)),  # and it looks untouched again
    ]  # fmt: skip
    blockhash = await ledger.blockhash()
    message = Message.new_with_blockhash(instructions, payer.pubkey(), blockhash)
    await ledger.send(Transaction([payer, away], message, blockhash))
    with pytest.raises(ChannelError, match="moved out"):
        await check()


async def test_the_ledger_refuses_with_the_right_error_and_journals_what_it_charged(
    tmp_path: Path,
) -> None:
    payer = Keypair()
    async with open_embedded_ledger(tmp_path / "ledger.db") as ledger:
        await ledger.airdrop(payer.pubkey(), SOL)
        await ledger.airdrop(payer.pubkey(), SOL)  # the same grant twice is two grants
        assert await ledger.balance(payer.pubkey()) == 2 * SOL
        blockhash = await ledger.blockhash()
        too_much = sp.transfer(
            {"from_pubkey": payer.pubkey(), "to_pubkey": Keypair().pubkey(), "lamports": 3 * SOL}
        )
        overdraw = Transaction(
            [payer], Message.new_with_blockhash([too_much], payer.pubkey(), blockhash), blockhash
        )
        with pytest.raises(LedgerError) as refused:  # a system error, not a lockup
            await ledger.simulate(overdraw)
        assert not isinstance(refused.value, LockupInForce)
        assert await ledger.balance(payer.pubkey()) == 2 * SOL  # a simulation costs nothing
        with pytest.raises(LedgerError):
            await ledger.send(overdraw)
        charged = await ledger.balance(payer.pubkey())
        assert charged == 2 * SOL - FEE  # a failed transaction still pays its fee
        later = await ledger.now() + 10_000
        await ledger.set_time(later)
    async with open_embedded_ledger(tmp_path / "ledger.db") as ledger:
        assert await ledger.balance(payer.pubkey()) == charged
        assert await ledger.now() >= later  # the clock does not go back over a restart
        clock = (await ledger.account(sysvar.CLOCK)).data  # what the stake program reads
        assert struct.unpack_from("<q", clock, 32)[0] >= later
