"""Receipts a close settles: the Merkle tree, the memo in every state, the book's
acknowledgements, and finding the close in a ledger's history."""

import hashlib
from pathlib import Path

import pytest
from solders.hash import Hash
from solders.keypair import Keypair
from solders.transaction import Transaction

from mercato.settlement import (
    EMPTY_ROOT,
    MAX_RECIPIENTS,
    MAX_TRANSACTION_BYTES,
    MEMO_PROGRAM,
    ChannelError,
    ChannelTerms,
    Frontier,
    LedgerError,
    RpcLedger,
    check_state,
    close_channel,
    countersign,
    find_close,
    merkle_path,
    merkle_root,
    open_channel_book,
    open_cluster_ledger,
    open_embedded_ledger,
    parse_receipts_memo,
    receipt_leaf,
    receipts_memo,
    refund_transaction,
    sign_state,
    state_receipts,
    verify_path,
)
from mercato.settlement._receipts import MAX_COUNT

from .test_book import opened
from .test_channel import SOL

# -- the tree ---------------------------------------------------------------------


def leaves_of(n: int) -> list[bytes]:
    return [receipt_leaf(b"receipt %d" % i) for i in range(n)]


def test_every_leaf_of_trees_of_1_to_17_leaves_verifies_and_nothing_tampered_does() -> None:
    for count in range(1, 18):
        leaves = leaves_of(count)
        root = merkle_root(leaves)
        assert Frontier(leaves).root() == root
        for index, leaf in enumerate(leaves):
            path = merkle_path(leaves, index)
            assert verify_path(leaf, index, count, path, root), (count, index)
            other = receipt_leaf(b"another receipt")
            assert not verify_path(other, index, count, path, root)
            assert not verify_path(leaf, index, count, path, hashlib.sha256(root).digest())
            for i in range(len(path)):  # each sibling changed in turn
                bent = [*path[:i], hashlib.sha256(path[i]).digest(), *path[i + 1 :]]
                assert not verify_path(leaf, index, count, bent, root)
            assert not verify_path(leaf, index, count, [*path, root], root)  # one too many
            if path:
                assert not verify_path(leaf, index, count, path[:-1], root)  # one too few
            if count > 1:  # the same path, another place
                assert not verify_path(leaf, (index + 1) % count, count, path, root)
            assert not verify_path(leaf, count, count, path, root)
            assert not verify_path(leaf, -1, count, path, root)


def test_the_tree_promotes_an_odd_node_and_separates_leaves_from_nodes() -> None:
    def node(left: bytes, right: bytes) -> bytes:
        return hashlib.sha256(b"\x01" + left + right).digest()

    a, b, c = leaves_of(3)
    assert merkle_root([]) == EMPTY_ROOT == bytes(32)
    assert merkle_root([a]) == a
    assert merkle_root([a, b, c]) == node(node(a, b), c)  # c promoted, never duplicated
    assert a == hashlib.sha256(b"mercato/receipt-leaf/v1\0receipt 0").digest()
    # An inner node is no leaf: the two prefixes differ.
    assert receipt_leaf(b"\x01" + a + b) != node(a, b)
    assert merkle_path([a, b, c], 2) == [node(a, b)]
    with pytest.raises(IndexError):
        merkle_path([a], 1)
    frontier = Frontier()
    for n in range(1, 200):  # the frontier follows the definition as it grows
        frontier.append(receipt_leaf(b"%d" % n))
        if n in (1, 2, 3, 5, 8, 64, 65, 127, 199):
            assert frontier.root() == merkle_root(
                [receipt_leaf(b"%d" % i) for i in range(1, n + 1)]
            )


def test_the_memo_is_parsed_strictly() -> None:
    root = merkle_root(leaves_of(5))
    memo = receipts_memo(5, root)
    assert memo == b"mercato/receipts/v1 5 " + root.hex().encode()
    assert parse_receipts_memo(memo) == (5, root)
    assert parse_receipts_memo(receipts_memo(0, EMPTY_ROOT)) == (0, EMPTY_ROOT)
    assert parse_receipts_memo(receipts_memo(MAX_COUNT, root)) == (MAX_COUNT, root)
    for bad in (
        b"mercato/receipts/v1 05 " + root.hex().encode(),  # a leading zero
        b"mercato/receipts/v1 5 " + root.hex().upper().encode(),
        b"mercato/receipts/v1  5 " + root.hex().encode(),
        b"mercato/receipts/v1 5 " + root.hex().encode() + b"\n",
        b"mercato/receipts/v2 5 " + root.hex().encode(),
        b"mercato/receipts/v1 -5 " + root.hex().encode(),
        b"mercato/receipts/v1 5 " + root.hex()[:-2].encode(),
        b"mercato/receipts/v1 0 " + root.hex().encode(),  # no receipts, yet a root
        b"mercato/receipts/v1 3 " + EMPTY_ROOT.hex().encode(),
        b"mercato/receipts/v1 %d " % (MAX_COUNT + 1) + root.hex().encode(),
        b"",
    ):
        assert parse_receipts_memo(bad) is None, bad
    for count, bad_root in ((-1, root), (1, EMPTY_ROOT), (0, root), (1, b"short")):
        with pytest.raises(ValueError):
            receipts_memo(count, bad_root)


# -- states with a memo -------------------------------------------------------------


def terms_for(payer: Keypair, payee: Keypair) -> ChannelTerms:
    keys = (Keypair().pubkey(), Keypair().pubkey())
    return ChannelTerms(payer.pubkey(), payee.pubkey(), *keys, 100 * SOL, 2_000_000_000)


def test_a_state_carries_the_commitment_and_a_changed_memo_breaks_its_signature() -> None:
    payer, payee = Keypair(), Keypair()
    terms, nonce = terms_for(payer, payee), Hash.new_unique()
    payouts = {payee.pubkey(): SOL}
    committed = (3, merkle_root(leaves_of(3)))
    state = sign_state(terms, nonce, payouts, payer, receipts=committed)
    assert state_receipts(state) == committed
    tx = Transaction.from_bytes(state)
    last = tx.message.instructions[-1]
    assert tx.message.account_keys[last.program_id_index] == MEMO_PROGRAM and not last.accounts
    # Checked as claimed, or against the commitment the payee expects.
    check_state(terms, nonce, payouts, state)
    check_state(terms, nonce, payouts, state, receipts=committed)
    with pytest.raises(ChannelError, match="does not pay"):
        check_state(terms, nonce, payouts, state, receipts=(2, merkle_root(leaves_of(2))))
    with pytest.raises(ChannelError, match="does not pay"):
        check_state(terms, nonce, payouts, state, receipts=None)
    # The memo changed after signing (same length, so the transaction still parses).
    other = merkle_root(leaves_of(4)).hex().encode()
    forged = state.replace(committed[1].hex().encode(), other)
    assert forged != state and state_receipts(forged) == (3, bytes.fromhex(other.decode()))
    with pytest.raises(ChannelError, match="not signed"):
        check_state(terms, nonce, payouts, forged)
    garbled = state.replace(b"mercato/receipts/v1 3", b"mercato/receipts/v1 x")
    with pytest.raises(ChannelError, match="memo"):
        check_state(terms, nonce, payouts, garbled)
    # States signed before receipts were committed still check (the old channels).
    old = sign_state(terms, nonce, payouts, payer)
    assert state_receipts(old) is None
    check_state(terms, nonce, payouts, old)


async def test_the_largest_state_with_a_memo_fits_and_closes(tmp_path: Path) -> None:
    async with open_cluster_ledger(tmp_path / "ledger.db") as ledger:
        payer, payee = Keypair(), Keypair()
        for who in (payer, payee):
            await ledger.airdrop(who.pubkey(), 10 * SOL)
        terms, nonce = await opened(ledger, payer, payee)
        creators = [Keypair().pubkey() for _ in range(MAX_RECIPIENTS - 1)]
        payouts = {payee.pubkey(): SOL // 2, **{c: SOL // 100 for c in creators}}
        biggest = (MAX_COUNT, merkle_root(leaves_of(7)))  # the longest count there is
        state = sign_state(terms, nonce, payouts, payer, receipts=biggest)
        assert len(state) <= MAX_TRANSACTION_BYTES
        print(f"the largest state with a memo: {len(state)} bytes")  # 1016 when written
        signature = await ledger.send(countersign(check_state(terms, nonce, payouts, state), payee))
        assert all([await ledger.balance(c) == SOL // 100 for c in creators])
        close = await find_close(ledger, terms)
        assert close is not None and close.signature == signature
        assert close.receipts == biggest


# -- the book ----------------------------------------------------------------------


async def test_the_payer_commits_to_its_receipts_and_the_payee_takes_acknowledgements(
    tmp_path: Path,
) -> None:
    async with open_cluster_ledger(tmp_path / "ledger.db") as ledger:
        payer, payee, stranger = Keypair(), Keypair(), Keypair()
        for who in (payer, payee, stranger):
            await ledger.airdrop(who.pubkey(), 10 * SOL)
        terms, nonce = await opened(ledger, payer, payee)
        amounts = {payee.pubkey(): 1_000_000}
        receipts: list[bytes] = []
        async with (
            open_channel_book(tmp_path / "payer.db") as payers,
            open_channel_book(tmp_path / "payee.db") as payees,
        ):
            await payers.add(terms, "payer", "the-provider", nonce)
            await payees.add(terms, "payee", "the-user", nonce)
            for task in range(3):
                paying, state, _ = await payers.pay(terms.stake, amounts, payer)
                assert state_receipts(state) == (task, merkle_root(leaves_of(task)))
                await payees.accept(terms.stake, amounts, state, paying.owed)
                receipts.append(b"receipt %d" % task)
                await payers.settle(terms.stake, amounts, receipts[-1], (task + 1) * 10**6)
                acked = await payers.acknowledge(terms.stake, payer)
                assert acked is not None and acked.owed == paying.owed
                assert acked.receipts == (task + 1, merkle_root(leaves_of(task + 1)))
                assert await payers.acknowledge(terms.stake, payer) is None  # said already
                held = await payees.take_ack(terms.stake, acked.owed, acked.state or b"")
                assert held.receipts == acked.receipts and held.state == acked.state
            latest = payees.get(terms.stake)
            # Refused, nothing stored: the same ack again (no more receipts), other
            # payouts, a count that goes back, a channel this book does not know.
            with pytest.raises(ChannelError, match="no more receipts"):
                await payees.take_ack(terms.stake, acked.owed, acked.state or b"")
            more = {payee.pubkey(): acked.owed[payee.pubkey()] + 1}
            with pytest.raises(ChannelError, match="other amounts"):
                await payees.take_ack(terms.stake, more, acked.state or b"")
            back = sign_state(terms, nonce, {payee.pubkey(): 4_000_000}, payer,
                              receipts=(1, merkle_root(leaves_of(1))))  # fmt: skip
            with pytest.raises(ChannelError, match="fewer than the 3"):
                await payees.accept(terms.stake, amounts, back, {payee.pubkey(): 4_000_000})
            with pytest.raises(ChannelError, match="no channel"):
                await payees.take_ack(Keypair().pubkey(), acked.owed, acked.state or b"")
            assert payees.get(terms.stake) == latest
            # The payee's close carries the payer's commitment to all three.
            signature = await close_channel(payees, ledger, payee, payees.get(terms.stake))
        async with open_channel_book(tmp_path / "payer.db") as payers:  # a restart
            assert await payers.leaves(terms.stake) == leaves_of(3)
            assert payers.commitment(terms.stake) == (3, merkle_root(leaves_of(3)))
        close = await find_close(ledger, terms)
        assert close is not None and close.signature == signature
        assert close.receipts == (3, merkle_root(leaves_of(3)))
        # A refund after the lockup is no close; a channel with no close has none.
        await ledger.set_time(terms.expires + 1)
        left = (await ledger.account(terms.stake)).lamports
        await ledger.send(refund_transaction(terms, payer, left, await ledger.blockhash()))
        assert (await find_close(ledger, terms)).signature == signature
        other, _ = await opened(ledger, stranger, payee)
        assert await find_close(ledger, other) is None


async def test_the_embedded_ledger_says_it_keeps_no_history(tmp_path: Path) -> None:
    async with open_embedded_ledger(tmp_path / "ledger.db") as ledger:
        terms = terms_for(Keypair(), Keypair())
        with pytest.raises(LedgerError, match=r"keeps no transaction history.*localnet"):
            await find_close(ledger, terms)


async def test_the_rpc_ledger_reads_the_close_from_a_localnet_history(start_localnet) -> None:
    localnet = start_localnet()
    ledger = RpcLedger(localnet.url, "localnet", faucet=True)
    try:
        payer, payee = Keypair(), Keypair()
        for who in (payer, payee):
            await ledger.airdrop(who.pubkey(), 10 * SOL)
        terms, nonce = await opened(ledger, payer, payee)
        assert await find_close(ledger, terms) is None
        assert len(await ledger.history(terms.stake)) == 1  # the opening
        payouts = {payee.pubkey(): SOL // 10}
        committed = (2, merkle_root(leaves_of(2)))
        state = sign_state(terms, nonce, payouts, payer, receipts=committed)
        signature = await ledger.send(countersign(check_state(terms, nonce, payouts, state), payee))
        history = await ledger.history(terms.stake)
        assert history[0] == signature and len(history) == 2
        assert await ledger.history(terms.stake, limit=1) == [signature]
        landed = await ledger.landed_transaction(signature)
        assert landed is not None and landed.succeeded and landed.slot > 0
        assert landed.transaction.signatures[1] != landed.transaction.signatures[0]
        close = await find_close(ledger, terms)
        assert close is not None and (close.signature, close.receipts) == (signature, committed)
        assert close.block_time is not None
        assert await ledger.landed_transaction(str(Keypair().sign_message(b"x"))) is None
    finally:
        await ledger.aclose()
