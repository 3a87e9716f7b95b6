"""Licences and subscriptions as Token-2022 tokens, on the real Solana runtime
(LiteSVM's Token-2022, associated token account and system programs, in the test)."""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
from solders import system_program as sp
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import Transaction

from mercato.settlement import (
    MAX_TRANSACTION_BYTES,
    TOKEN_2022,
    AccountInfo,
    EmbeddedLedger,
    LedgerError,
    Licence,
    LicenceError,
    LicenceTerms,
    check_licence,
    check_purchase,
    cosign_purchase,
    licence_account,
    licence_mint,
    mint_size,
    new_seed,
    open_embedded_ledger,
    purchase_message,
    purchase_transaction,
    read_licence,
    revoke_transaction,
)
from mercato.settlement import _token2022 as t22

SOL = 1_000_000_000
FEE = 5000  # lamports per signature
PRICE = 50_000_000
MEMO = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")


@pytest.fixture
async def ledger(tmp_path: Path):
    async with open_embedded_ledger(tmp_path / "ledger.db") as opened:
        yield opened


@pytest.fixture
async def parties(ledger: EmbeddedLedger) -> tuple[Keypair, Keypair, Keypair]:
    buyer, creator, other = Keypair(), Keypair(), Keypair()
    for who in (buyer, creator, other):
        await ledger.airdrop(who.pubkey(), 10 * SOL)
    return buyer, creator, other


def listing_of(creator: Keypair, name: str = "wordcount") -> str:
    return f"{creator.pubkey()}/{name}"


def make_terms(buyer: Keypair, creator: Keypair, **changes: object) -> LicenceTerms:
    terms = LicenceTerms(
        listing=listing_of(creator),
        plan="pro",
        versions="^1",
        expires=0,
        refund_until=0,
        transferable=False,
        price=PRICE,
        buyer=buyer.pubkey(),
        creator=creator.pubkey(),
    )
    return replace(terms, **changes)  # type: ignore[arg-type]


async def buy(
    ledger: EmbeddedLedger, terms: LicenceTerms, buyer: Keypair, creator: Keypair
) -> tuple[Pubkey, Transaction]:
    """The whole sale: the buyer's node signs, the creator's checks, cosigns, submits."""
    rent = await ledger.rent(mint_size(terms))
    raw = purchase_transaction(terms, buyer, new_seed(), rent, await ledger.blockhash())
    checked, mint = check_purchase(terms, rent, raw)
    signed = cosign_purchase(checked, creator)
    await ledger.send(signed)
    return mint, signed


async def licence_of(ledger: EmbeddedLedger, mint: Pubkey, holder: Pubkey) -> Licence:
    holding = await ledger.account(licence_account(holder, mint))
    return read_licence(mint, await ledger.account(mint), holder, holding)


async def send(ledger: EmbeddedLedger, signers: list[Keypair], *instructions: Instruction) -> None:
    message = Message.new_with_blockhash(
        list(instructions), signers[0].pubkey(), await ledger.blockhash()
    )
    await ledger.send(Transaction(signers, message, message.recent_blockhash))


def token_amount(account: AccountInfo | None) -> int:
    assert account is not None
    return int.from_bytes(account.data[64:72], "little")


def key_of_length(length: int) -> Keypair:
    while True:  # base58 keys are 32 to 44 characters; most are 43 or 44
        key = Keypair()
        if len(str(key.pubkey())) == length:
            return key


def decompiled(message: Message) -> list[Instruction]:
    keys, header = message.account_keys, message.header
    signed, readonly_signed = header.num_required_signatures, header.num_readonly_signed_accounts
    unsigned_writable = len(keys) - header.num_readonly_unsigned_accounts

    def writable(i: int) -> bool:
        return i < signed - readonly_signed or signed <= i < unsigned_writable

    return [
        Instruction(
            keys[ix.program_id_index],
            bytes(ix.data),
            [AccountMeta(keys[i], message.is_signer(i), writable(i)) for i in ix.accounts],
        )
        for ix in message.instructions
    ]


# Purchase.


async def test_a_purchase_pays_the_creator_and_mints_one_licence_to_the_buyer(
    ledger: EmbeddedLedger, parties: tuple[Keypair, Keypair, Keypair]
) -> None:
    buyer, creator, _ = parties
    now = await ledger.now()
    terms = make_terms(buyer, creator, expires=now + 30 * 86_400, refund_until=now + 86_400)
    before = {k: await ledger.balance(k.pubkey()) for k in (buyer, creator)}
    mint, _ = await buy(ledger, terms, buyer, creator)

    assert await ledger.balance(creator.pubkey()) == before[creator] + PRICE
    mint_account = await ledger.account(mint)
    holding = await ledger.account(licence_account(buyer.pubkey(), mint))
    assert mint_account is not None and holding is not None
    assert len(mint_account.data) == mint_size(terms)  # what the rent was computed for
    assert mint_account.lamports == await ledger.rent(mint_size(terms))
    spent = PRICE + mint_account.lamports + holding.lamports + 2 * FEE
    assert await ledger.balance(buyer.pubkey()) == before[buyer] - spent
    assert token_amount(holding) == 1 and int.from_bytes(mint_account.data[36:44], "little") == 1

    licence = await licence_of(ledger, mint, buyer.pubkey())
    assert licence == Licence(
        mint=mint,
        listing=terms.listing,
        plan="pro",
        versions="^1",
        expires=terms.expires,
        refund_until=terms.refund_until,
        buyer=buyer.pubkey(),
        creator=creator.pubkey(),
        holder=buyer.pubkey(),
        transferable=False,
        amount=1,
    )
    check_licence(
        licence, creator=creator.pubkey(), listing=terms.listing, holder=buyer.pubkey(), now=now
    )


async def test_the_longest_purchase_fits_in_one_transaction_and_lands(
    ledger: EmbeddedLedger,
) -> None:
    buyer, creator = key_of_length(44), Keypair()
    for who in (buyer, creator):
        await ledger.airdrop(who.pubkey(), 10 * SOL)
    terms = LicenceTerms(
        listing=f"{key_of_length(44).pubkey()}/{'n' * 64}",
        plan="p" * 32,
        versions=">=1.2.3-rc.1 <2.0.0 || ^3.0.0-b1"[:32],
        expires=2**63 - 1,
        refund_until=2**63 - 1,
        transferable=False,
        price=2**62,
        buyer=buyer.pubkey(),
        creator=creator.pubkey(),
    )
    assert len(terms.listing) == 109 and len(terms.versions) == 32
    terms = replace(terms, price=PRICE)
    mint, signed = await buy(ledger, terms, buyer, creator)
    size = len(bytes(signed))
    print(f"longest purchase: {size} bytes")
    assert size <= MAX_TRANSACTION_BYTES
    assert size == 1154  # the module docstring states it
    mint_account = await ledger.account(mint)
    assert mint_account is not None and len(mint_account.data) == mint_size(terms)
    licence = await licence_of(ledger, mint, buyer.pubkey())
    assert (licence.listing, licence.plan, licence.versions) == (
        terms.listing,
        terms.plan,
        terms.versions,
    )
    assert licence.expires == licence.refund_until == 2**63 - 1


async def test_check_purchase_refuses_anything_but_the_agreed_transaction(
    ledger: EmbeddedLedger, parties: tuple[Keypair, Keypair, Keypair]
) -> None:
    buyer, creator, other = parties
    terms = make_terms(buyer, creator, expires=2_000_000_000)
    rent, blockhash, seed = (
        await ledger.rent(mint_size(terms)),
        await ledger.blockhash(),
        new_seed(),
    )
    raw = purchase_transaction(terms, buyer, seed, rent, blockhash)
    check_purchase(terms, rent, raw)  # the agreed one passes

    for changed in (
        replace(terms, price=PRICE - 1),
        replace(terms, plan="basic"),
        replace(terms, versions="*"),
        replace(terms, expires=2_000_000_001),
        replace(terms, refund_until=1),
        replace(terms, transferable=True),
        replace(terms, listing=listing_of(creator, "other")),
    ):
        with pytest.raises(LicenceError, match="not the one agreed"):
            check_purchase(changed, rent, raw)
    with pytest.raises(LicenceError, match="not the one agreed"):
        check_purchase(terms, rent + 1, raw)

    # An extra instruction, signed by the buyer.
    message = purchase_message(terms, seed, rent, blockhash)
    assert Message.new_with_blockhash(decompiled(message), buyer.pubkey(), blockhash) == message
    memo = Instruction(MEMO, b"and one more thing", [])
    extra = Message.new_with_blockhash([*decompiled(message), memo], buyer.pubkey(), blockhash)
    tx = Transaction.new_unsigned(extra)
    tx.partial_sign([buyer], blockhash)
    with pytest.raises(LicenceError, match="not the one agreed"):
        check_purchase(terms, rent, bytes(tx))

    # No buyer signature, or another key's in its place.
    unsigned = Transaction.new_unsigned(message)
    with pytest.raises(LicenceError, match="not signed by its buyer"):
        check_purchase(terms, rent, bytes(unsigned))
    forged = Transaction.populate(
        message, [other.sign_message(bytes(message)), Signature.default()]
    )
    with pytest.raises(LicenceError, match="not signed by its buyer"):
        check_purchase(terms, rent, bytes(forged))

    # A purchase whose mint authority (and payee) is another key.
    theirs = purchase_transaction(
        replace(terms, creator=other.pubkey()), buyer, seed, rent, blockhash
    )
    with pytest.raises(LicenceError, match="not the one agreed"):
        check_purchase(terms, rent, theirs)

    with pytest.raises(LicenceError, match="not a Solana transaction"):
        check_purchase(terms, rent, b"\1" + bytes(100))
    with pytest.raises(LicenceError, match="larger than"):
        check_purchase(terms, rent, bytes(MAX_TRANSACTION_BYTES + 1))
    with pytest.raises(LicenceError, match="not a licence purchase"):
        check_purchase(
            terms, rent, bytes(Transaction([buyer], Message([memo], buyer.pubkey()), blockhash))
        )
    # What survives the check is only what was checked: a junk creator slot is dropped.
    junk = Transaction.from_bytes(raw)
    junk = Transaction.populate(junk.message, [junk.signatures[0], Signature(bytes([7]) * 64)])
    checked, _ = check_purchase(terms, rent, bytes(junk))
    assert checked.signatures[1] == Signature.default()
    with pytest.raises(LicenceError, match="not the creator"):
        cosign_purchase(checked, other)


async def test_the_buyer_cannot_land_a_purchase_without_the_creator(
    ledger: EmbeddedLedger, parties: tuple[Keypair, Keypair, Keypair]
) -> None:
    buyer, creator, _ = parties
    terms = make_terms(buyer, creator)
    rent, seed = await ledger.rent(mint_size(terms)), new_seed()
    raw = purchase_transaction(terms, buyer, seed, rent, await ledger.blockhash())
    before = {k: await ledger.balance(k.pubkey()) for k in (buyer, creator)}
    with pytest.raises(LedgerError, match="SignatureFailure"):
        await ledger.send(Transaction.from_bytes(raw))
    assert {k: await ledger.balance(k.pubkey()) for k in (buyer, creator)} == before
    assert await ledger.account(licence_mint(creator.pubkey(), seed)) is None


async def test_a_replayed_purchase_fails_and_changes_no_balance(
    ledger: EmbeddedLedger, parties: tuple[Keypair, Keypair, Keypair]
) -> None:
    buyer, creator, _ = parties
    terms = make_terms(buyer, creator)
    mint, signed = await buy(ledger, terms, buyer, creator)
    before = {k: await ledger.balance(k) for k in (buyer.pubkey(), creator.pubkey(), mint)}
    with pytest.raises(LedgerError):
        await ledger.send(signed)
    assert {k: await ledger.balance(k) for k in before} == before
    assert token_amount(await ledger.account(licence_account(buyer.pubkey(), mint))) == 1


# Forgeries and what check_licence refuses.


async def test_a_mint_sold_by_another_key_with_the_same_metadata_is_refused(
    ledger: EmbeddedLedger, parties: tuple[Keypair, Keypair, Keypair]
) -> None:
    buyer, creator, forger = parties
    # The forger "sells" the creator's listing to the buyer, as its own creator.
    terms = make_terms(buyer, forger, listing=listing_of(creator))
    mint, _ = await buy(ledger, terms, buyer, forger)
    licence = await licence_of(ledger, mint, buyer.pubkey())
    assert licence.creator == forger.pubkey()
    with pytest.raises(LicenceError, match=r"issued by .*, not by the creator"):
        check_licence(
            licence,
            creator=creator.pubkey(),
            listing=terms.listing,
            holder=buyer.pubkey(),
            now=await ledger.now(),
        )


def set_mint_authority(mint: Pubkey, current: Pubkey, new: Pubkey) -> Instruction:
    """SetAuthority (6), MintTokens (0)."""
    data = bytes([6, 0, 1]) + bytes(new)
    return Instruction(
        TOKEN_2022, data, [AccountMeta(mint, False, True), AccountMeta(current, True, False)]
    )


def set_metadata_authority(mint: Pubkey, current: Pubkey, new: Pubkey) -> Instruction:
    """The token-metadata interface's UpdateAuthority."""
    data = hashlib.sha256(b"spl_token_metadata_interface:update_the_authority").digest()[:8]
    metas = [AccountMeta(mint, False, True), AccountMeta(current, True, False)]
    return Instruction(TOKEN_2022, data + bytes(new), metas)


async def handed_over(
    ledger: EmbeddedLedger,
    forger: Keypair,
    creator: Keypair,
    fields: list[tuple[str, str]],
    *,
    transferable: bool,
) -> Pubkey:
    """A mint the forger makes without the creator: it issues itself a token, then
    gives the creator every authority (mint, permanent delegate, metadata), which
    needs no signature of the creator's. All its authorities look right."""
    mint_key = Keypair()
    mint, me, them = mint_key.pubkey(), forger.pubkey(), creator.pubkey()
    fixed = t22.EXTENSIONS_START + t22.PERMANENT_DELEGATE_LEN + t22.METADATA_POINTER_LEN
    fixed += 0 if transferable else t22.NON_TRANSFERABLE_LEN
    create = sp.create_account(
        {
            "from_pubkey": me,
            "to_pubkey": mint,
            "lamports": SOL // 10,
            "space": fixed,
            "owner": TOKEN_2022,
        }
    )
    extensions = [] if transferable else [t22.initialize_non_transferable_mint(mint)]
    await send(
        ledger,
        [forger, mint_key],
        create,
        *extensions,
        t22.initialize_permanent_delegate(mint, them),
        t22.initialize_metadata_pointer(mint, mint),
        t22.initialize_mint2(mint, 0, me),
        t22.initialize_metadata(mint, me, me, listing_of(creator), "pro", ""),
        *(t22.update_metadata_field(mint, me, k, v) for k, v in fields),
        t22.create_associated(me, me, mint),
        t22.mint_to_checked(mint, licence_account(me, mint), me, 1, 0),
        set_mint_authority(mint, me, them),
        set_metadata_authority(mint, me, them),
    )
    return mint


async def test_a_mint_handed_over_to_the_creator_is_refused_though_its_authorities_match(
    ledger: EmbeddedLedger, parties: tuple[Keypair, Keypair, Keypair]
) -> None:
    _, creator, forger = parties
    fields = [
        ("versions", "*"),
        ("expires", "0"),
        ("buyer", str(forger.pubkey())),
        ("refund_until", "0"),
        ("seed", new_seed()),
    ]
    mint = await handed_over(ledger, forger, creator, fields, transferable=False)
    mint_account = await ledger.account(mint)
    assert mint_account is not None and mint_account.data[4:36] == bytes(creator.pubkey())
    with pytest.raises(LicenceError, match="was not created by"):
        await licence_of(ledger, mint, forger.pubkey())


async def test_a_licence_cannot_be_transferred_unless_its_plan_says_so(
    ledger: EmbeddedLedger, parties: tuple[Keypair, Keypair, Keypair]
) -> None:
    buyer, creator, other = parties
    mint, _ = await buy(ledger, make_terms(buyer, creator), buyer, creator)
    theirs = licence_account(other.pubkey(), mint)
    with pytest.raises(LedgerError):  # Token-2022 refuses: NonTransferable
        await send(
            ledger,
            [buyer],
            t22.create_associated(buyer.pubkey(), other.pubkey(), mint),
            t22.transfer_checked(
                licence_account(buyer.pubkey(), mint), mint, theirs, buyer.pubkey(), 1, 0
            ),
        )
    assert token_amount(await ledger.account(licence_account(buyer.pubkey(), mint))) == 1
    assert await ledger.account(theirs) is None

    # A hand-made mint without NonTransferable, passed on to another holder: refused.
    fields = [
        ("versions", "*"),
        ("expires", "0"),
        ("buyer", str(buyer.pubkey())),
        ("refund_until", "0"),
        ("seed", new_seed()),
    ]
    forged = await handed_over(ledger, buyer, creator, fields, transferable=True)
    await send(
        ledger,
        [buyer],
        t22.create_associated(buyer.pubkey(), other.pubkey(), forged),
        t22.transfer_checked(
            licence_account(buyer.pubkey(), forged),
            forged,
            licence_account(other.pubkey(), forged),
            buyer.pubkey(),
            1,
            0,
        ),
    )
    with pytest.raises(LicenceError, match="was not created by"):
        await licence_of(ledger, forged, other.pubkey())

    # A transferable plan's token, passed on: good for its new holder, not the old one.
    terms = make_terms(buyer, creator, transferable=True)
    mint, _ = await buy(ledger, terms, buyer, creator)
    mint_account = await ledger.account(mint)
    assert mint_account is not None and len(mint_account.data) == mint_size(terms)
    await send(
        ledger,
        [buyer],
        t22.create_associated(buyer.pubkey(), other.pubkey(), mint),
        t22.transfer_checked(
            licence_account(buyer.pubkey(), mint),
            mint,
            licence_account(other.pubkey(), mint),
            buyer.pubkey(),
            1,
            0,
        ),
    )
    now = await ledger.now()
    licence = await licence_of(ledger, mint, other.pubkey())
    assert licence.transferable and licence.buyer == buyer.pubkey() and licence.amount == 1
    check_licence(
        licence, creator=creator.pubkey(), listing=terms.listing, holder=other.pubkey(), now=now
    )
    old = await licence_of(ledger, mint, buyer.pubkey())
    with pytest.raises(LicenceError, match="passed on"):
        check_licence(
            old, creator=creator.pubkey(), listing=terms.listing, holder=buyer.pubkey(), now=now
        )


async def test_check_licence_refuses_another_listing_an_expired_one_and_another_holder(
    ledger: EmbeddedLedger, parties: tuple[Keypair, Keypair, Keypair]
) -> None:
    buyer, creator, other = parties
    now = await ledger.now()
    terms = make_terms(buyer, creator, plan="monthly", expires=now + 60)
    mint, _ = await buy(ledger, terms, buyer, creator)
    licence = await licence_of(ledger, mint, buyer.pubkey())
    who = {"creator": creator.pubkey(), "holder": buyer.pubkey()}
    check_licence(licence, listing=terms.listing, now=now + 59, **who)
    with pytest.raises(LicenceError, match=r"is for .*/wordcount, not .*/other"):
        check_licence(licence, listing=listing_of(creator, "other"), now=now, **who)
    with pytest.raises(LicenceError, match="expired on 2"):
        check_licence(licence, listing=terms.listing, now=now + 60, **who)
    with pytest.raises(LicenceError, match="not held by"):
        check_licence(
            licence, listing=terms.listing, now=now, creator=creator.pubkey(), holder=other.pubkey()
        )
    # Not transferable, yet held by someone else than its buyer (only its creator could
    # make that): refused.
    moved = replace(licence, holder=other.pubkey())
    with pytest.raises(LicenceError, match="cannot pass to another holder"):
        check_licence(
            moved, listing=terms.listing, now=now, creator=creator.pubkey(), holder=other.pubkey()
        )


async def test_read_licence_refuses_what_is_not_a_licence(
    ledger: EmbeddedLedger, parties: tuple[Keypair, Keypair, Keypair]
) -> None:
    buyer, creator, other = parties
    mint, _ = await buy(ledger, make_terms(buyer, creator), buyer, creator)
    mint_account = await ledger.account(mint)
    holding = await ledger.account(licence_account(buyer.pubkey(), mint))
    assert mint_account is not None and holding is not None
    holder = buyer.pubkey()

    with pytest.raises(LicenceError, match="no mint"):
        read_licence(mint, None, holder, holding)
    wallet = await ledger.account(buyer.pubkey())
    with pytest.raises(LicenceError, match="not a Token-2022 mint"):
        read_licence(buyer.pubkey(), wallet, holder, holding)
    with pytest.raises(LicenceError, match="not a token mint"):
        read_licence(mint, holding, holder, holding)
    with pytest.raises(LicenceError, match="no token account"):
        read_licence(mint, mint_account, holder, None)
    with pytest.raises(LicenceError, match="belongs to"):
        read_licence(mint, mint_account, other.pubkey(), holding)
    with pytest.raises(LicenceError, match="too large"):
        read_licence(
            mint, AccountInfo(1, mint_account.data + bytes(4096), TOKEN_2022), holder, holding
        )

    # A plain Token-2022 mint of 0 decimals, and one of 2, with the buyer's account of it.
    plain, decimals = Keypair(), Keypair()
    await send(
        ledger,
        [buyer, plain, decimals],
        sp.create_account(
            {
                "from_pubkey": holder,
                "to_pubkey": plain.pubkey(),
                "lamports": SOL // 100,
                "space": 82,
                "owner": TOKEN_2022,
            }
        ),
        t22.initialize_mint2(plain.pubkey(), 0, creator.pubkey()),
        sp.create_account(
            {
                "from_pubkey": holder,
                "to_pubkey": decimals.pubkey(),
                "lamports": SOL // 100,
                "space": 82,
                "owner": TOKEN_2022,
            }
        ),
        t22.initialize_mint2(decimals.pubkey(), 2, creator.pubkey()),
        t22.create_associated(holder, holder, plain.pubkey()),
    )
    plain_account = await ledger.account(plain.pubkey())
    with pytest.raises(LicenceError, match="no token metadata"):
        read_licence(plain.pubkey(), plain_account, holder, holding)
    with pytest.raises(LicenceError, match="2 decimals"):
        read_licence(decimals.pubkey(), await ledger.account(decimals.pubkey()), holder, holding)
    other_mint_holding = await ledger.account(licence_account(holder, plain.pubkey()))
    with pytest.raises(LicenceError, match="another mint"):
        read_licence(mint, mint_account, holder, other_mint_holding)

    # Whatever the bytes (a malicious creator can shape a mint), only LicenceError.
    data = mint_account.data
    for cut in range(len(data)):
        with pytest.raises(LicenceError):
            read_licence(mint, AccountInfo(1, data[:cut], TOKEN_2022), holder, holding)
    for at in range(len(data)):
        bent = data[:at] + bytes([data[at] ^ 0x5A]) + data[at + 1 :]
        with contextlib.suppress(LicenceError):  # or a licence, if the bytes still make one
            read_licence(mint, AccountInfo(1, bent, TOKEN_2022), holder, holding)


# Revocation.


async def test_revoke_burns_the_token_and_refunds_the_buyer(
    ledger: EmbeddedLedger, parties: tuple[Keypair, Keypair, Keypair]
) -> None:
    buyer, creator, other = parties
    now = await ledger.now()
    terms = make_terms(buyer, creator, refund_until=now + 86_400)
    mint, _ = await buy(ledger, terms, buyer, creator)
    licence = await licence_of(ledger, mint, buyer.pubkey())
    with pytest.raises(LicenceError, match="only the licence's creator"):
        revoke_transaction(licence, other, PRICE, await ledger.blockhash())
    before = {k: await ledger.balance(k.pubkey()) for k in (buyer, creator)}
    await ledger.send(revoke_transaction(licence, creator, PRICE, await ledger.blockhash()))
    assert await ledger.balance(buyer.pubkey()) == before[buyer] + PRICE
    assert await ledger.balance(creator.pubkey()) == before[creator] - PRICE - FEE

    revoked = await licence_of(ledger, mint, buyer.pubkey())
    assert revoked.amount == 0
    with pytest.raises(LicenceError, match="revoked or refunded"):
        check_licence(
            revoked, creator=creator.pubkey(), listing=terms.listing, holder=buyer.pubkey(), now=now
        )
    with pytest.raises(LicenceError, match="nothing to revoke"):
        revoke_transaction(revoked, creator, 0, await ledger.blockhash())

    # Without a refund: the burn alone, signed by the creator alone.
    mint, _ = await buy(ledger, terms, buyer, creator)
    tx = revoke_transaction(
        await licence_of(ledger, mint, buyer.pubkey()), creator, 0, await ledger.blockhash()
    )
    assert len(tx.message.instructions) == 1 and len(tx.signatures) == 1
    await ledger.send(tx)
    assert (await licence_of(ledger, mint, buyer.pubkey())).amount == 0


# Terms on the wire.


def test_terms_travel_and_malformed_ones_are_refused() -> None:
    buyer, creator = Keypair(), Keypair()
    terms = make_terms(buyer, creator, expires=5, refund_until=3, transferable=True)
    wire = terms.to_wire()
    assert LicenceTerms.from_wire(wire) == terms
    bad: list[dict[str, object]] = [
        {**wire, "price": -1},
        {**wire, "price": "1"},
        {**wire, "expires": True},
        {**wire, "expires": 2**63},
        {**wire, "transferable": 1},
        {**wire, "listing": "no-slash"},
        {**wire, "listing": f"{creator.pubkey()}/{'n' * 65}"},
        {**wire, "listing": f"{creator.pubkey()}/Word"},
        {**wire, "plan": "p" * 33},
        {**wire, "plan": ""},
        {**wire, "versions": "^1\n"},
        {**wire, "versions": "v" * 33},
        {**wire, "versions": "^1\u202e"},
        {**wire, "buyer": "not a key"},
        {**wire, "buyer": 7},
        {**wire, "creator": str(buyer.pubkey())},
        {k: v for k, v in wire.items() if k != "plan"},
    ]
    for obj in bad:
        with pytest.raises(LicenceError):
            LicenceTerms.from_wire(obj)
    with pytest.raises(LicenceError):
        LicenceTerms.from_wire([wire])
    with pytest.raises(LicenceError, match="seed"):
        licence_mint(creator.pubkey(), "short")
