"""x402 `exact` payments on Solana: the facilitator's checks (`check_exact_payment`)
of transactions built as the official client (@x402/svm's ExactSvmScheme) builds
them, each refusal with the official facilitator's invalidReason, and a valid
payment co-signed and settled on the real Solana runtime (LiteSVM)."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from solders import system_program as sp
from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message, MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import Transaction, VersionedTransaction

from mercato.settlement import (
    MEMO_PROGRAM,
    TEST_MINT,
    TOKEN_2022,
    TOKEN_PROGRAM,
    EmbeddedLedger,
    ExactRequirements,
    InvalidReason,
    LedgerError,
    PaymentInvalid,
    associated_token_address,
    check_exact_payment,
    cosign_payment,
    ensure_test_mint,
    fund_tokens,
    open_embedded_ledger,
    payment_key,
    token_balance,
    transfer_checked,
)
from mercato.settlement import _token2022 as t22
from mercato.settlement._x402 import LIGHTHOUSE_PROGRAM, MAX_PAYLOAD_CHARS

PRICE = 250_000  # base units: 0.25 of the test token
DEVNET = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1"
FEE = 5000  # lamports per signature
# The official client's compute budget (@x402/svm 2.27: DEFAULT_COMPUTE_UNIT_*).
CLIENT_UNITS, CLIENT_PRICE = 20_000, 1


@dataclass
class Market:
    ledger: EmbeddedLedger
    node: Keypair  # the gateway's node: fee payer
    buyer: Keypair  # holds test tokens, and no SOL at all
    provider: Keypair  # paid (its associated token account exists)
    req: ExactRequirements
    blockhash: Hash


@pytest.fixture
async def market(tmp_path: Path):
    async with open_embedded_ledger(tmp_path / "ledger.db") as ledger:
        await ensure_test_mint(ledger)
        node, buyer, provider = Keypair(), Keypair(), Keypair()
        await ledger.airdrop(node.pubkey(), 10**9)
        await fund_tokens(ledger, buyer.pubkey(), 10 * PRICE)
        await fund_tokens(ledger, provider.pubkey(), 0)
        req = ExactRequirements(
            network=DEVNET,
            asset=TEST_MINT,
            amount=PRICE,
            pay_to=provider.pubkey(),
            fee_payer=node.pubkey(),
            decimals=6,
            token_program=TOKEN_PROGRAM,
            max_timeout_s=60,
        )
        yield Market(ledger, node, buyer, provider, req, await ledger.blockhash())


def transfer(m: Market, **changes: Any) -> Instruction:
    """The official client's TransferChecked for ``m.req``, with ``changes``."""
    req = m.req
    program = changes.get("program", req.token_program)
    mint = changes.get("mint", req.asset)
    args = {
        "source": associated_token_address(m.buyer.pubkey(), mint, program),
        "mint": mint,
        "destination": associated_token_address(req.pay_to, mint, program),
        "authority": m.buyer.pubkey(),
        "amount": req.amount,
        "decimals": req.decimals,
    }
    args.update({k: v for k, v in changes.items() if k != "program"})
    return transfer_checked(**args, token_program=program)


def memo(text: str | None = None) -> Instruction:
    """The client's memo: extra.memo, or a random 16-byte hex nonce."""
    data = (text if text is not None else secrets.token_hex(16)).encode()
    return Instruction(MEMO_PROGRAM, data, [])


def client_instructions(m: Market, memo_text: str | None = None, **changes: Any) -> list:
    """What ExactSvmScheme.createPaymentPayload puts in its transaction, in order."""
    return [
        set_compute_unit_limit(CLIENT_UNITS),
        set_compute_unit_price(CLIENT_PRICE),
        transfer(m, **changes),
        memo(memo_text),
    ]


def encode(
    m: Market,
    instructions: list[Instruction],
    *,
    fee_payer: Pubkey | None = None,
    signers: list[Keypair] | None = None,
    legacy: bool = False,
    lookups: list[AddressLookupTableAccount] | None = None,
) -> str:
    """A version-0 (or legacy) transaction of ``instructions``, the fee payer's
    signature left empty and the others' given (the buyer's by default), base64."""
    payer = fee_payer or m.node.pubkey()
    message: Message | MessageV0
    if legacy:
        message = Message.new_with_blockhash(instructions, payer, m.blockhash)
    else:
        message = MessageV0.try_compile(payer, instructions, lookups or [], m.blockhash)
    keys = {k.pubkey(): k for k in (signers if signers is not None else [m.buyer])}
    signed = to_bytes_versioned(message)
    signatures = [
        keys[key].sign_message(signed) if key in keys else Signature.default()
        for key in message.account_keys[: message.header.num_required_signatures]
    ]
    tx = VersionedTransaction.populate(message, signatures)
    return base64.b64encode(bytes(tx)).decode()


def refused(payload: str, req: ExactRequirements) -> str:
    with pytest.raises(PaymentInvalid) as caught:
        check_exact_payment(payload, req)
    assert str(caught.value.reason) in str(caught.value)
    return caught.value.reason


# A valid payment, settled.


async def test_a_payment_as_the_official_client_builds_it_settles_exactly(market: Market) -> None:
    m = market
    ledger = m.ledger
    m.blockhash = await ledger.blockhash()
    payload = encode(m, client_instructions(m))
    checked = check_exact_payment(payload, m.req)
    assert checked.payer == m.buyer.pubkey() and checked.amount == PRICE
    assert checked.source == associated_token_address(m.buyer.pubkey(), TEST_MINT)
    assert payment_key(payload) == checked.message_hash
    assert checked.signature == str(checked.tx.signatures[1])
    assert checked.tx.signatures[0] == Signature.default()  # the node has not signed yet

    node_before = await ledger.balance(m.node.pubkey())
    settled = cosign_payment(checked, m.node)
    assert all(settled.verify_with_results())
    await ledger.simulate(settled)
    await ledger.send(settled)

    buyer = await token_balance(ledger, m.buyer.pubkey(), TEST_MINT)
    provider = await token_balance(ledger, m.provider.pubkey(), TEST_MINT)
    assert buyer is not None and buyer.amount == 9 * PRICE
    assert provider is not None and provider.amount == PRICE
    assert await ledger.balance(m.buyer.pubkey()) == 0  # the buyer has and spends no SOL
    # The node paid the fee: two signatures and the priority (20,000 units at 1
    # micro-lamport, rounded up to a lamport).
    assert node_before - await ledger.balance(m.node.pubkey()) == 2 * FEE + 1

    # The same payment again: the ledger takes it once.
    with pytest.raises(LedgerError):
        await ledger.send(cosign_payment(check_exact_payment(payload, m.req), m.node))
    assert (await token_balance(ledger, m.provider.pubkey(), TEST_MINT)).amount == PRICE


async def test_the_replay_key_is_the_message_and_a_node_cosigns_only_its_own(
    market: Market,
) -> None:
    m = market
    instructions = client_instructions(m)
    first = check_exact_payment(encode(m, instructions), m.req)
    again = check_exact_payment(encode(m, instructions), m.req)
    assert first.message_hash == again.message_hash
    other = check_exact_payment(encode(m, client_instructions(m)), m.req)  # a new nonce
    assert other.message_hash != first.message_hash
    with pytest.raises(PaymentInvalid) as caught:
        cosign_payment(first, Keypair())
    assert caught.value.reason == InvalidReason.FEE_PAYER_MISMATCH


async def test_the_node_may_be_paid_itself_and_the_requested_memo_is_taken(
    market: Market,
) -> None:
    m = market
    m.req = replace(m.req, pay_to=m.node.pubkey(), memo="order-42")  # its ATA exists (faucet)
    m.blockhash = await m.ledger.blockhash()
    checked = check_exact_payment(encode(m, client_instructions(m, "order-42")), m.req)
    await m.ledger.send(cosign_payment(checked, m.node))
    paid = await token_balance(m.ledger, m.node.pubkey(), TEST_MINT)
    assert paid is not None and paid.amount == 1_000 * 10**6 + PRICE


async def test_a_token_2022_payment_settles(market: Market) -> None:
    m = market
    ledger, authority, mint = m.ledger, Keypair(), Keypair()
    await ledger.airdrop(authority.pubkey(), 10**9)
    who = authority.pubkey()
    params = sp.CreateAccountParams(
        from_pubkey=who, to_pubkey=mint.pubkey(), lamports=await ledger.rent(82), space=82,
        owner=TOKEN_2022,
    )  # fmt: skip
    buyer_account = t22.associated_address(m.buyer.pubkey(), mint.pubkey())
    setup = [
        sp.create_account(params),
        t22.initialize_mint2(mint.pubkey(), 2, who),
        t22.create_associated(who, m.buyer.pubkey(), mint.pubkey()),
        t22.create_associated(who, m.provider.pubkey(), mint.pubkey()),
        t22.mint_to_checked(mint.pubkey(), buyer_account, who, 1_000, 2),
    ]
    message = Message(setup, who)
    await ledger.send(Transaction([authority, mint], message, await ledger.blockhash()))

    m.req = replace(m.req, asset=mint.pubkey(), amount=300, decimals=2, token_program=TOKEN_2022)
    m.blockhash = await ledger.blockhash()
    checked = check_exact_payment(encode(m, client_instructions(m)), m.req)
    await ledger.send(cosign_payment(checked, m.node))
    provider = await token_balance(ledger, m.provider.pubkey(), mint.pubkey())
    assert provider is not None and (provider.amount, provider.decimals) == (300, 2)
    # The same transfer through the other token program pays in no mint of it.
    m.req = replace(m.req, token_program=TOKEN_PROGRAM)
    payload = encode(m, client_instructions(m, program=TOKEN_2022))
    assert refused(payload, m.req) == InvalidReason.NO_TRANSFER_INSTRUCTION


async def test_legacy_transactions_lighthouse_and_memos_are_taken_as_the_official_does(
    market: Market,
) -> None:
    m = market
    check_exact_payment(encode(m, client_instructions(m), legacy=True), m.req)
    no_memo = client_instructions(m)[:3]
    check_exact_payment(encode(m, no_memo), m.req)  # the memo is optional without extra.memo
    assertion = Instruction(LIGHTHOUSE_PROGRAM, b"\x01\x02", [])  # Phantom's assertions
    check_exact_payment(encode(m, [*no_memo, assertion, memo(), memo(), memo()]), m.req)


# Refusals, with the official facilitator's reasons.


async def test_what_does_not_decode_is_refused(market: Market) -> None:
    m = market
    good = base64.b64decode(encode(m, client_instructions(m)))
    reason = InvalidReason.COULD_NOT_BE_DECODED
    for payload in (
        "",
        "not base64!",
        base64.b64encode(b"\x01" + bytes(64)).decode(),
        base64.b64encode(good[:-3]).decode(),
        base64.b64encode(good + b"\0").decode(),  # bytes after its end
        "A" * (MAX_PAYLOAD_CHARS + 4),  # over a transaction's size
        base64.b64encode(good).decode() + "\n",
    ):
        assert refused(payload, m.req) == reason, payload[:40]
    assert refused(None, m.req) == reason  # type: ignore[arg-type]


async def test_another_fee_payer_or_a_missing_or_forged_signature_is_refused(
    market: Market,
) -> None:
    m = market
    ixs = client_instructions(m)
    # The buyer as its own fee payer: the node is not asked to pay, nor is it its to pay.
    own = encode(m, ixs, fee_payer=m.buyer.pubkey())
    assert refused(own, m.req) == InvalidReason.FEE_PAYER_MISMATCH
    unsigned = encode(m, ixs, signers=[])
    assert refused(unsigned, m.req) == InvalidReason.SIGNATURE_INVALID
    stranger = Keypair()
    forged = encode(m, client_instructions(m, authority=stranger.pubkey()), signers=[m.buyer])
    assert refused(forged, m.req) == InvalidReason.SIGNATURE_INVALID
    # A signature of another message (the amount changed after signing).
    tx = VersionedTransaction.from_bytes(base64.b64decode(encode(m, ixs)))
    other = VersionedTransaction.from_bytes(
        base64.b64decode(encode(m, client_instructions(m, amount=1)))
    )
    swapped = VersionedTransaction.populate(other.message, list(tx.signatures))
    assert refused(base64.b64encode(bytes(swapped)).decode(), m.req) == (
        InvalidReason.SIGNATURE_INVALID
    )


async def test_instruction_counts_and_the_compute_budget_are_checked(market: Market) -> None:
    m = market
    ixs = client_instructions(m)
    assert refused(encode(m, ixs[:2]), m.req) == InvalidReason.INSTRUCTIONS_LENGTH
    eight = [*ixs, memo(), memo(), memo(), memo()]
    assert refused(encode(m, eight), m.req) == InvalidReason.INSTRUCTIONS_LENGTH

    limit, price, pay, note = ixs
    swapped = encode(m, [price, limit, pay, note])
    assert refused(swapped, m.req) == InvalidReason.COMPUTE_LIMIT_INSTRUCTION
    no_budget = encode(m, [pay, memo(), memo()])
    assert refused(no_budget, m.req) == InvalidReason.COMPUTE_LIMIT_INSTRUCTION
    padded = Instruction(limit.program_id, bytes(limit.data) + b"\0", [])
    assert refused(encode(m, [padded, price, pay]), m.req) == (
        InvalidReason.COMPUTE_LIMIT_INSTRUCTION
    )
    greedy = encode(m, [set_compute_unit_limit(1_400_000), price, pay])
    assert refused(greedy, m.req) == InvalidReason.COMPUTE_LIMIT_TOO_HIGH
    assert refused(encode(m, [limit, note, pay]), m.req) == (
        InvalidReason.COMPUTE_PRICE_INSTRUCTION
    )
    dear = encode(m, [limit, set_compute_unit_price(5_000_001), pay])
    assert refused(dear, m.req) == InvalidReason.COMPUTE_PRICE_TOO_HIGH
    few = set_compute_unit_limit(2_000)  # the price at its cap, on few enough units
    check_exact_payment(encode(m, [few, set_compute_unit_price(5_000_000), pay]), m.req)


async def test_the_priority_fee_the_node_pays_is_capped(market: Market) -> None:
    """Units and price each under their caps still multiply: 200,000 units at
    5,000,000 micro-lamports would be a million lamports of the node's. The total
    is capped (10,000 lamports by default), the official client's (20,000 units
    at 1 micro-lamport) far under it."""
    m = market
    limit, price, pay, note = client_instructions(m)
    check_exact_payment(encode(m, [limit, price, pay, note]), m.req)
    most = set_compute_unit_limit(200_000)
    for micro in (50_001, 5_000_000):  # 10,000.2 lamports, 1,000,000 lamports
        payload = encode(m, [most, set_compute_unit_price(micro), pay])
        assert refused(payload, m.req) == InvalidReason.COMPUTE_PRICE_TOO_HIGH, micro
    strict = replace(m.req, max_priority_fee=0)
    assert refused(encode(m, [limit, price, pay]), strict) == InvalidReason.COMPUTE_PRICE_TOO_HIGH
    check_exact_payment(encode(m, [limit, set_compute_unit_price(0), pay]), strict)

    # At the cap, on the runtime: the node pays two signatures and 10,000 lamports.
    m.blockhash = await m.ledger.blockhash()
    checked = check_exact_payment(encode(m, [most, set_compute_unit_price(50_000), pay]), m.req)
    node_before = await m.ledger.balance(m.node.pubkey())
    await m.ledger.send(cosign_payment(checked, m.node))
    assert node_before - await m.ledger.balance(m.node.pubkey()) == 2 * FEE + 10_000


async def test_a_payment_has_two_signers_the_node_and_the_buyer(market: Market) -> None:
    m = market
    limit, price, pay, _ = client_instructions(m)
    # A memo a third key signs: a third signature, a third fee for the node.
    third = Keypair()
    signed_memo = Instruction(MEMO_PROGRAM, b"hi", [AccountMeta(third.pubkey(), True, False)])
    payload = encode(m, [limit, price, pay, signed_memo], signers=[m.buyer, third])
    assert refused(payload, m.req) == InvalidReason.EXCESSIVE_SIGNERS
    assert InvalidReason.EXCESSIVE_SIGNERS == "invalid_exact_svm_payload_excessive_signers"
    # The transfer's own accounts as signers (a multisig authority's): refused alike.
    signer = Keypair()
    multisig = transfer(m, authority=m.buyer.pubkey())
    multisig.accounts = [*multisig.accounts, AccountMeta(signer.pubkey(), True, False)]
    payload = encode(m, [limit, price, multisig], signers=[m.buyer, signer])
    assert refused(payload, m.req) == InvalidReason.EXCESSIVE_SIGNERS
    with pytest.raises(PaymentInvalid):
        payment_key("not base64!")


async def test_anything_but_one_transfer_checked_is_refused(market: Market) -> None:
    m = market
    limit, price, pay, note = client_instructions(m)
    lamports = sp.transfer(
        sp.TransferParams(from_pubkey=m.buyer.pubkey(), to_pubkey=m.provider.pubkey(), lamports=1)
    )
    assert refused(encode(m, [limit, price, lamports]), m.req) == (
        InvalidReason.NO_TRANSFER_INSTRUCTION
    )
    # Transfer (3), not TransferChecked (12): the same accounts, no mint or decimals checked.
    unchecked = Instruction(TOKEN_PROGRAM, b"\x03" + PRICE.to_bytes(8, "little"), pay.accounts)
    assert refused(encode(m, [limit, price, unchecked]), m.req) == (
        InvalidReason.NO_TRANSFER_INSTRUCTION
    )
    long = Instruction(TOKEN_PROGRAM, bytes(pay.data) + b"\0", pay.accounts)
    assert refused(encode(m, [limit, price, long]), m.req) == InvalidReason.NO_TRANSFER_INSTRUCTION
    # A second transfer, or any other program, after it.
    for extra, reason in (
        (transfer(m), InvalidReason.UNKNOWN_FOURTH_INSTRUCTION),
        (lamports, InvalidReason.UNKNOWN_FOURTH_INSTRUCTION),
    ):
        assert refused(encode(m, [limit, price, pay, extra]), m.req) == reason
    assert refused(encode(m, [limit, price, pay, note, lamports]), m.req) == (
        InvalidReason.UNKNOWN_FIFTH_INSTRUCTION
    )
    six = [limit, price, pay, note, note, lamports]
    assert refused(encode(m, six), m.req) == InvalidReason.UNKNOWN_SIXTH_INSTRUCTION
    seven = [limit, price, pay, note, note, memo(), lamports]
    assert refused(encode(m, seven), m.req) == InvalidReason.UNKNOWN_SEVENTH_INSTRUCTION


async def test_the_fee_payer_pays_the_fee_and_nothing_else(market: Market) -> None:
    m = market
    node = m.node.pubkey()
    # The node's own tokens, moved by the node (the official facilitator's rule).
    own = client_instructions(m, source=associated_token_address(node, TEST_MINT), authority=node)
    assert refused(encode(m, own, signers=[]), m.req) == (
        InvalidReason.FEE_PAYER_TRANSFERRING_FUNDS
    )
    # Named anywhere else at all (ours): here a memo it would have to sign.
    limit, price, pay, _ = client_instructions(m)
    signed_memo = Instruction(MEMO_PROGRAM, b"hi", [AccountMeta(node, True, False)])
    assert refused(encode(m, [limit, price, pay, signed_memo]), m.req) == (
        InvalidReason.FEE_PAYER_TRANSFERRING_FUNDS
    )
    named = Instruction(MEMO_PROGRAM, b"hi", [AccountMeta(node, False, False)])
    assert refused(encode(m, [limit, price, pay, named]), m.req) == (
        InvalidReason.FEE_PAYER_TRANSFERRING_FUNDS
    )


async def test_another_mint_recipient_amount_or_decimals_is_refused(market: Market) -> None:
    m = market
    other_mint = Keypair().pubkey()
    assert refused(encode(m, client_instructions(m, mint=other_mint)), m.req) == (
        InvalidReason.MINT_MISMATCH
    )
    elsewhere = associated_token_address(Keypair().pubkey(), TEST_MINT)
    assert refused(encode(m, client_instructions(m, destination=elsewhere)), m.req) == (
        InvalidReason.RECIPIENT_MISMATCH
    )
    owner_itself = m.provider.pubkey()  # the wallet, not its token account
    assert refused(encode(m, client_instructions(m, destination=owner_itself)), m.req) == (
        InvalidReason.RECIPIENT_MISMATCH
    )
    # Paying oneself pays no one.
    self_paid = replace(m.req, pay_to=m.buyer.pubkey())
    assert refused(encode(m, client_instructions(m, destination=self_paid.destination)),
                   self_paid) == InvalidReason.RECIPIENT_MISMATCH  # fmt: skip
    for amount in (PRICE - 1, PRICE + 1, 0, 2**64 - 1):
        payload = encode(m, client_instructions(m, amount=amount))
        assert refused(payload, m.req) == InvalidReason.AMOUNT_MISMATCH, amount
    assert refused(encode(m, client_instructions(m, decimals=5)), m.req) == (
        InvalidReason.AMOUNT_MISMATCH
    )


async def test_the_required_memo_must_be_there_once_and_exactly(market: Market) -> None:
    m = market
    req = replace(m.req, memo="order-42")
    limit, price, pay, _ = client_instructions(m)
    assert refused(encode(m, [limit, price, pay]), req) == InvalidReason.MEMO_COUNT
    twice = [limit, price, pay, memo("order-42"), memo("order-42")]
    assert refused(encode(m, twice), req) == InvalidReason.MEMO_COUNT
    assert refused(encode(m, [limit, price, pay, memo("order-43")]), req) == (
        InvalidReason.MEMO_MISMATCH
    )
    check_exact_payment(encode(m, [limit, price, pay, memo("order-42")]), req)


async def test_address_lookup_tables_are_refused(market: Market) -> None:
    m = market
    table = AddressLookupTableAccount(Keypair().pubkey(), [TEST_MINT, MEMO_PROGRAM])
    payload = encode(m, client_instructions(m), lookups=[table])
    assert VersionedTransaction.from_bytes(base64.b64decode(payload)).message.address_table_lookups
    assert refused(payload, m.req) == InvalidReason.LOOKUP_TABLES


def test_requirements_are_x402s_payment_requirements() -> None:
    fee_payer, pay_to = Keypair().pubkey(), Keypair().pubkey()
    req = ExactRequirements(DEVNET, TEST_MINT, 1_000, pay_to, fee_payer, 6, TOKEN_PROGRAM, 60)
    assert req.as_json() == {
        "scheme": "exact",
        "network": DEVNET,
        "amount": "1000",
        "asset": str(TEST_MINT),
        "payTo": str(pay_to),
        "maxTimeoutSeconds": 60,
        "extra": {"feePayer": str(fee_payer), "tokenProgram": str(TOKEN_PROGRAM)},
    }
    assert req.destination == associated_token_address(pay_to, TEST_MINT)
    assert replace(req, memo="x").as_json()["extra"]["memo"] == "x"
    for bad in ({"amount": 0}, {"amount": 2**64}, {"decimals": 256}, {"max_timeout_s": 0},
                {"token_program": fee_payer}, {"memo": ""}, {"memo": "x" * 257},
                {"max_priority_fee": -1}):  # fmt: skip
        with pytest.raises(ValueError):
            replace(req, **bad)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_mangled_payment_is_refused_never_crashes(data: st.DataObject) -> None:
    """Any bytes changed in a valid payment: a PaymentInvalid or, where the change
    is harmless (the empty fee payer signature, the memo's nonce), a payment."""
    buyer, node, provider = FUZZED
    req = ExactRequirements(
        DEVNET, TEST_MINT, PRICE, provider.pubkey(), node.pubkey(), 6, TOKEN_PROGRAM, 60
    )
    m = Market(None, node, buyer, provider, req, Hash.default())  # type: ignore[arg-type]
    raw = bytearray(base64.b64decode(encode(m, client_instructions(m, memo_text="nonce"))))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    try:
        checked = check_exact_payment(base64.b64encode(bytes(raw)).decode(), req)
    except PaymentInvalid:
        return
    assert checked.amount == PRICE and checked.payer == buyer.pubkey()


FUZZED = (Keypair(), Keypair(), Keypair())  # buyer, node, provider: no ledger, checks only
