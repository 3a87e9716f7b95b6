"""Licences and subscriptions: a Token-2022 token, bought in one transaction.

    buy      the buyer's node builds and signs one transaction (the buyer pays
             its fee): it pays the creator the price, creates a fresh mint, one
             per sale, at an address derived from the creator's key and a
             random seed, gives it its extensions and metadata, and mints one
             token to the buyer's associated token account
    issue    the creator's node checks that the bytes are exactly that
             transaction for the agreed terms (`check_purchase`), adds its
             signature and submits it
    check    whoever serves the listing reads the mint and the holder's token
             account (`read_licence`) and checks them (`check_licence`)
    revoke   the creator alone burns the token, as the mint's permanent
             delegate, and refunds what it chooses (`revoke_transaction`)

The mint: decimals 0, supply 1, no freeze authority; mint authority, permanent
delegate and metadata update authority the creator; NonTransferable unless the
plan is transferable; a MetadataPointer (with no authority) at itself; and
TokenMetadata (executed by Token-2022 on the mint; it grows the account, so the
mint is created for its fixed extensions and paid for its final size,
`mint_size`):

    name     the listing, "publisher/name"
    symbol   the plan
    uri      ""
    versions     the version range it covers, e.g. "^1" or "*"
    expires      unix seconds, "0" for never
    buyer        base58
    refund_until unix seconds, "0" for no refunds
    seed         the seed its address is derived with

Why the derived address: a mint's authorities prove nothing on their own. Anyone
can make a mint with themselves as mint and update authority, write any
metadata, mint themselves a token and then hand both authorities (and, at
creation, the permanent delegate) to the creator: the result looks issued by
the creator. A licence mint is instead created with CreateAccountWithSeed from
the creator's key, which the system program accepts only with the creator's
signature, so `read_licence` accepts a mint only at
`Pubkey.create_with_seed(creator, seed, TOKEN_2022)`.

At the longest fields (a 109-character listing, 32-character plan and version
range, 19-digit times, a 44-character buyer) the purchase is 1,154 bytes, under
Solana's 1,232; the test measures it.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from solders import system_program as sp
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import Transaction

from ._channel import MAX_TRANSACTION_BYTES
from ._cosign import cosign
from ._errors import LicenceError
from ._ledger import AccountInfo
from ._rpc_reads import parse_token
from ._token2022 import ATA_PROGRAM as ATA_PROGRAM
from ._token2022 import (
    EXTENSIONS_START,
    METADATA_POINTER_LEN,
    NON_TRANSFERABLE_LEN,
    PERMANENT_DELEGATE_LEN,
    TLV_HEADER,
    TOKEN_2022,
    associated_address,
    burn_checked,
    create_associated,
    initialize_metadata,
    initialize_metadata_pointer,
    initialize_mint2,
    initialize_non_transferable_mint,
    initialize_permanent_delegate,
    metadata_len,
    mint_to_checked,
    update_metadata_field,
)

_PUBLISHER = r"[1-9A-HJ-NP-Za-km-z]{32,44}"  # a base58 key
BASE58_KEY = re.compile(_PUBLISHER)
_SLUG = r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?"
LISTING = re.compile(rf"{_PUBLISHER}/{_SLUG}")  # at most 109 characters
PLAN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")  # at most 32
VERSIONS = re.compile(r"[\x20-\x7e]{1,32}")  # printable ASCII: bounded bytes, no controls
TIME = re.compile(r"0|[1-9][0-9]{0,18}")
SEED_LEN = 22  # 16 random bytes, base64url; the system program takes up to 32
SEED = re.compile(rf"[A-Za-z0-9_-]{{{SEED_LEN}}}")
MAX_U63 = 2**63  # times and prices: an i64 on the ledger, exact in every client
FIELDS = ("versions", "expires", "buyer", "refund_until", "seed")
# No genuine licence account comes near these: refuse bigger ones before parsing.
MAX_MINT_BYTES = 2048
MAX_HOLDING_BYTES = 512


@dataclass(frozen=True)
class LicenceTerms:
    """What a buyer and a creator agree on for one sale; enough to check the purchase."""

    listing: str  # "publisher/name"
    plan: str
    versions: str  # a version range text
    expires: int  # unix s, 0 = never
    refund_until: int  # unix s, 0 = no refunds
    transferable: bool
    price: int  # lamports paid to the creator
    buyer: Pubkey
    creator: Pubkey

    def __post_init__(self) -> None:
        _check_text("listing", self.listing, LISTING, '"publisher/name"')
        _check_text("plan", self.plan, PLAN, "a slug of up to 32 characters")
        _check_text("versions", self.versions, VERSIONS, "up to 32 printable characters")
        for name in ("expires", "refund_until", "price"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value < MAX_U63:
                raise LicenceError(f"a licence's {name} is a whole number from 0 to 2^63-1")
        if type(self.transferable) is not bool:
            raise LicenceError("a licence's transferable is true or false")
        if not isinstance(self.buyer, Pubkey) or not isinstance(self.creator, Pubkey):
            raise LicenceError("a licence's buyer and creator are public keys")
        if self.buyer == self.creator:
            raise LicenceError("a creator cannot buy its own licence")

    def to_wire(self) -> dict[str, object]:
        return {
            "listing": self.listing,
            "plan": self.plan,
            "versions": self.versions,
            "expires": self.expires,
            "refund_until": self.refund_until,
            "transferable": self.transferable,
            "price": self.price,
            "buyer": str(self.buyer),
            "creator": str(self.creator),
        }

    @classmethod
    def from_wire(cls, obj: object) -> LicenceTerms:
        if not isinstance(obj, dict):
            raise LicenceError("licence terms are an object")
        try:
            buyer, creator = (_pubkey(obj[k]) for k in ("buyer", "creator"))
            return cls(
                obj["listing"],
                obj["plan"],
                obj["versions"],
                obj["expires"],
                obj["refund_until"],
                obj["transferable"],
                obj["price"],
                buyer,
                creator,
            )
        except KeyError as exc:
            raise LicenceError(f"licence terms lack {exc}") from exc


def _check_text(name: str, value: object, pattern: re.Pattern[str], what: str) -> None:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        shown = repr(value)[:60] if isinstance(value, str) else type(value).__name__
        raise LicenceError(f"a licence's {name} is {what}, not {shown}")


def _pubkey(value: object) -> Pubkey:
    if not isinstance(value, str) or len(value) > 44:
        raise LicenceError("a public key is a base58 text")
    try:
        return Pubkey.from_string(value)
    except ValueError as exc:
        raise LicenceError(f"{value!r} is not a public key") from exc


def new_seed() -> str:
    """A fresh seed for one sale's mint (the buyer's node picks it)."""
    return secrets.token_urlsafe(16)


def licence_mint(creator: Pubkey, seed: str) -> Pubkey:
    """The address of the mint sold with ``seed``: only ``creator`` can create it."""
    _check_text("seed", seed, SEED, f"{SEED_LEN} base64url characters")
    return Pubkey.create_with_seed(creator, seed, TOKEN_2022)


def licence_account(holder: Pubkey, mint: Pubkey) -> Pubkey:
    """The holder's (Token-2022 associated) token account for a licence."""
    return associated_address(holder, mint)


def _metadata(terms: LicenceTerms, seed: str) -> tuple[str, str, str, list[tuple[str, str]]]:
    """(name, symbol, uri, additional fields) of the sale's mint, in this order."""
    values = (terms.versions, str(terms.expires), str(terms.buyer), str(terms.refund_until), seed)
    return terms.listing, terms.plan, "", list(zip(FIELDS, values, strict=True))


def _fixed_size(terms: LicenceTerms) -> int:
    """The mint's bytes before its metadata: what it is created with."""
    size = EXTENSIONS_START + PERMANENT_DELEGATE_LEN + METADATA_POINTER_LEN
    return size if terms.transferable else size + NON_TRANSFERABLE_LEN


def mint_size(terms: LicenceTerms) -> int:
    """The final bytes of the sale's mint account: what its rent must cover."""
    name, symbol, uri, fields = _metadata(terms, "0" * SEED_LEN)  # every seed is this long
    return _fixed_size(terms) + TLV_HEADER + metadata_len(name, symbol, uri, fields)


def purchase_message(terms: LicenceTerms, seed: str, mint_rent: int, blockhash: Hash) -> Message:
    """The one transaction of a sale (its message); the buyer pays its fee."""
    if type(mint_rent) is not int or not 0 < mint_rent < MAX_U63:
        raise LicenceError("the mint's rent is a whole number of lamports above 0")
    buyer, creator = terms.buyer, terms.creator
    mint = licence_mint(creator, seed)
    name, symbol, uri, fields = _metadata(terms, seed)
    create = sp.create_account_with_seed(
        {
            "from_pubkey": buyer,
            "to_pubkey": mint,
            "base": creator,
            "seed": seed,
            "lamports": mint_rent,
            "space": _fixed_size(terms),
            "owner": TOKEN_2022,
        }
    )
    pay = sp.transfer({"from_pubkey": buyer, "to_pubkey": creator, "lamports": terms.price})
    instructions = [pay, create]
    if not terms.transferable:  # extensions first: InitializeMint2 seals the layout
        instructions.append(initialize_non_transferable_mint(mint))
    instructions += [
        initialize_permanent_delegate(mint, creator),
        initialize_metadata_pointer(mint, mint),
        initialize_mint2(mint, 0, creator),
        initialize_metadata(mint, creator, creator, name, symbol, uri),
        *(update_metadata_field(mint, creator, key, value) for key, value in fields),
        create_associated(buyer, buyer, mint),
        mint_to_checked(mint, licence_account(buyer, mint), creator, 1, 0),
    ]
    return Message.new_with_blockhash(instructions, buyer, blockhash)


def purchase_transaction(
    terms: LicenceTerms, buyer: Keypair, seed: str, mint_rent: int, blockhash: Hash
) -> bytes:
    """The buyer's half-signed purchase, for the creator to check and cosign."""
    if buyer.pubkey() != terms.buyer:
        raise LicenceError("only the licence's buyer signs its purchase")
    message = purchase_message(terms, seed, mint_rent, blockhash)
    tx = Transaction.new_unsigned(message)
    tx.partial_sign([buyer], message.recent_blockhash)
    return bytes(tx)


def _seed_of(tx: Transaction) -> str:
    """The seed the purchase's CreateAccountWithSeed names (its second instruction):
    what the expected transaction is rebuilt with."""
    instructions = tx.message.instructions
    data = bytes(instructions[1].data) if len(instructions) > 1 else b""
    # u32 tag 3, base (32), seed (u64 length, UTF-8), lamports, space, owner
    if len(data) != 4 + 32 + 8 + SEED_LEN + 8 + 8 + 32 or data[:4] != b"\3\0\0\0":
        raise LicenceError("the transaction is not a licence purchase")
    if int.from_bytes(data[36:44], "little") != SEED_LEN:
        raise LicenceError("the transaction is not a licence purchase")
    try:
        return data[44 : 44 + SEED_LEN].decode("ascii")
    except UnicodeDecodeError as exc:
        raise LicenceError("the purchase's seed is not text") from exc


def check_purchase(
    terms: LicenceTerms, mint_rent: int, tx_bytes: bytes
) -> tuple[Transaction, Pubkey]:
    """The creator's check of a purchase: exactly the transaction these terms make
    (for the seed and blockhash it names), signed by the buyer. Returns it, with
    only the checked signature kept, and the mint it creates; LicenceError otherwise."""
    if len(tx_bytes) > MAX_TRANSACTION_BYTES:
        raise LicenceError("the purchase is larger than a Solana transaction")
    try:
        tx = Transaction.from_bytes(tx_bytes)
    except Exception as exc:
        raise LicenceError("the purchase is not a Solana transaction") from exc
    seed = _seed_of(tx)
    expected = purchase_message(terms, seed, mint_rent, tx.message.recent_blockhash)
    if tx.message != expected:
        raise LicenceError(
            "the purchase is not the one agreed (price, terms, accounts or instructions)"
        )
    signers = list(expected.account_keys[: expected.header.num_required_signatures])
    if len(tx.signatures) != len(signers):
        raise LicenceError("the purchase has the wrong number of signatures")
    buyer_signature = tx.signatures[signers.index(terms.buyer)]
    if not buyer_signature.verify(terms.buyer, bytes(expected)):
        raise LicenceError("the purchase is not signed by its buyer")
    # Rebuilt from what was checked: nothing else the sender put in the bytes survives.
    canonical = [buyer_signature if k == terms.buyer else Signature.default() for k in signers]
    return Transaction.populate(expected, canonical), licence_mint(terms.creator, seed)


def cosign_purchase(tx: Transaction, creator: Keypair) -> Transaction:
    """The creator's signature on a purchase `check_purchase` returned: ready to submit."""
    return cosign(tx, creator, LicenceError, "creator", "purchase")


@dataclass(frozen=True)
class Licence:
    """What the ledger says a licence is: its mint's metadata and one holder's token."""

    mint: Pubkey
    listing: str
    plan: str
    versions: str
    expires: int
    refund_until: int
    buyer: Pubkey
    creator: Pubkey  # mint authority, permanent delegate and metadata update authority
    holder: Pubkey
    transferable: bool
    amount: int  # the holder's tokens: 1, or 0 once revoked or refunded


def read_licence(
    mint: Pubkey,
    mint_account: AccountInfo | None,
    holder: Pubkey,
    holder_account: AccountInfo | None,
) -> Licence:
    """The licence ``mint`` as ``holder`` holds it (its token account, usually
    `licence_account`), from the two accounts as the ledger has them.
    LicenceError unless the mint is one a creator sold (see the module docstring)."""
    info, extensions = _read_mint(mint, mint_account)
    metadata = extensions.get("tokenMetadata")
    if metadata is None or metadata.get("mint") != str(mint):
        raise LicenceError(f"{mint} has no token metadata of its own: it is not a licence")
    pointer = extensions.get("metadataPointer")
    if pointer is None or pointer.get("metadataAddress") != str(mint):
        raise LicenceError(f"{mint}'s metadata pointer does not point at itself")
    fields = _licence_fields(mint, metadata)
    creator = _issuer(mint, info, extensions, metadata, fields["seed"])
    return Licence(
        mint=mint,
        listing=fields["listing"],
        plan=fields["plan"],
        versions=fields["versions"],
        expires=int(fields["expires"]),
        refund_until=int(fields["refund_until"]),
        buyer=Pubkey.from_string(fields["buyer"]),
        creator=creator,
        holder=holder,
        transferable="nonTransferable" not in extensions,
        amount=_holding(mint, holder, holder_account),
    )


def _read_mint(
    mint: Pubkey, account: AccountInfo | None
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A Token-2022 mint's base fields and its extensions by name (their states)."""
    if account is None:
        raise LicenceError(f"there is no mint {mint} on the ledger")
    if account.owner != TOKEN_2022:
        raise LicenceError(f"{mint} is not a Token-2022 mint")
    if len(account.data) > MAX_MINT_BYTES:
        raise LicenceError(f"{mint} is too large to be a licence")
    parsed = parse_token(account.data, None)
    if parsed is None or parsed["type"] != "mint":
        raise LicenceError(f"{mint} is not a token mint")
    info = parsed["info"]
    if info["decimals"] != 0:
        raise LicenceError(f"{mint} has {info['decimals']} decimals; a licence has 0")
    extensions: dict[str, dict[str, Any]] = {}
    for extension in info.get("extensions", []):
        name = extension["extension"]
        if name in extensions and name != "unparseableExtension":  # refuse, not pick one
            raise LicenceError(f"{mint} lists its {name} extension twice")
        extensions[name] = extension.get("state", {})
    return info, extensions


def _licence_fields(mint: Pubkey, metadata: dict[str, Any]) -> dict[str, str]:
    """The metadata's licence fields, each checked as the terms are."""
    fields = {"listing": metadata["name"], "plan": metadata["symbol"]}
    for key, value in metadata["additionalMetadata"]:
        if key in FIELDS:
            fields[key] = value
    missing = [key for key in FIELDS if key not in fields]
    if missing:
        raise LicenceError(f"{mint}'s metadata lacks {', '.join(missing)}: it is not a licence")
    checks = {
        "listing": LISTING,
        "plan": PLAN,
        "versions": VERSIONS,
        "expires": TIME,
        "refund_until": TIME,
        "buyer": BASE58_KEY,
        "seed": SEED,
    }
    for key, pattern in checks.items():
        if not pattern.fullmatch(fields[key]) or (pattern is TIME and int(fields[key]) >= MAX_U63):
            raise LicenceError(f"{mint}'s metadata has no valid {key}: it is not a licence")
    try:
        Pubkey.from_string(fields["buyer"])
    except ValueError as exc:
        raise LicenceError(f"{mint}'s metadata names no valid buyer") from exc
    return fields


def _issuer(
    mint: Pubkey,
    info: dict[str, Any],
    extensions: dict[str, dict[str, Any]],
    metadata: dict[str, Any],
    seed: str,
) -> Pubkey:
    """The creator: the mint's mint authority, permanent delegate and metadata update
    authority, all one key, which the mint's address is derived from."""
    authority = info["mintAuthority"]
    if authority is None:
        raise LicenceError(f"{mint} has no mint authority: it is not a licence")
    delegate = extensions.get("permanentDelegate", {}).get("delegate")
    if delegate is None:
        raise LicenceError(f"{mint} has no permanent delegate: it could not be revoked")
    if delegate != authority:
        raise LicenceError(f"{mint}'s permanent delegate {delegate} is not its issuer {authority}")
    if metadata["updateAuthority"] != authority:
        raise LicenceError(f"{mint}'s metadata is not under its issuer {authority}")
    creator = Pubkey.from_string(authority)
    if licence_mint(creator, seed) != mint:
        raise LicenceError(f"{mint} was not created by {creator}: it is not a licence it sold")
    return creator


def _holding(mint: Pubkey, holder: Pubkey, account: AccountInfo | None) -> int:
    """The holder's token amount of ``mint``, from its token account."""
    if account is None:
        raise LicenceError(f"{holder} has no token account for licence {mint}")
    if account.owner != TOKEN_2022 or len(account.data) > MAX_HOLDING_BYTES:
        raise LicenceError(f"{holder}'s account for licence {mint} is not a Token-2022 account")
    parsed = parse_token(account.data, 0)
    if parsed is None or parsed["type"] != "account":
        raise LicenceError(f"{holder}'s account for licence {mint} is not a token account")
    info = parsed["info"]
    if info["mint"] != str(mint):
        raise LicenceError(f"{holder}'s token account holds another mint than {mint}")
    if info["owner"] != str(holder):
        raise LicenceError(f"the token account for licence {mint} belongs to {info['owner']}")
    return int(info["tokenAmount"]["amount"])


def check_licence(
    licence: Licence, *, creator: Pubkey, listing: str, holder: Pubkey, now: int
) -> None:
    """Whether ``holder`` may use ``listing`` (by ``creator``) at ``now`` on this
    licence; LicenceError says why not. The plan and versions are the caller's."""
    if licence.creator != creator:
        raise LicenceError(
            f"this licence was issued by {licence.creator}, not by the creator {creator}"
        )
    if licence.listing != listing:
        raise LicenceError(f"this licence is for {licence.listing}, not {listing}")
    if licence.holder != holder:
        raise LicenceError(f"this licence's token account is not held by {holder}")
    if licence.amount < 1:
        gone = "revoked, refunded or passed on" if licence.transferable else "revoked or refunded"
        raise LicenceError(f"this holder's licence was {gone}")
    if not licence.transferable and licence.buyer != holder:
        raise LicenceError(
            f"this licence was sold to {licence.buyer} and cannot pass to another holder"
        )
    if licence.expires and licence.expires <= now:
        day = datetime.fromtimestamp(licence.expires, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        raise LicenceError(f"this licence expired on {day}")


def revoke_transaction(
    licence: Licence, creator: Keypair, refund: int, blockhash: Hash
) -> Transaction:
    """The creator's revocation: ``refund`` lamports back to the buyer (none if 0),
    and the holder's token burnt by the creator as permanent delegate."""
    if creator.pubkey() != licence.creator:
        raise LicenceError("only the licence's creator can revoke it")
    if licence.amount < 1:
        raise LicenceError("this licence holds no token: nothing to revoke")
    if type(refund) is not int or not 0 <= refund < MAX_U63:
        raise LicenceError("a refund is a whole number of lamports, 0 or more")
    who = creator.pubkey()
    instructions = []
    if refund:
        instructions.append(
            sp.transfer({"from_pubkey": who, "to_pubkey": licence.buyer, "lamports": refund})
        )
    account = licence_account(licence.holder, licence.mint)
    instructions.append(burn_checked(account, licence.mint, who, licence.amount, 0))
    message = Message.new_with_blockhash(instructions, who, blockhash)
    return Transaction([creator], message, blockhash)
