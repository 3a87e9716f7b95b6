"""SPL tokens for both token programs (SPL Token and Token-2022): the
instructions settlement builds, encoded by hand (solders has none), and the
accounts it reads.

Instructions: the associated token account program's Create and
CreateIdempotent, InitializeMint2, MintToChecked, BurnChecked and
TransferChecked; each takes the token program it is for (SPL Token by
default). `_token2022` binds them to Token-2022 and adds its extensions.
Accounts: `read_mint` and `read_token_account` read a mint's and a token
account's base fields from their data (either program; the extensions of
Token-2022 are skipped: `_rpc_reads` parses those), `token_balance` a wallet's
balance of a mint on a ledger.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from solders import system_program as sp
from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey
from solders.token.associated import get_associated_token_address

from ._rpc_reads import MINT_LEN as MINT_LEN
from ._rpc_reads import TOKEN_2022_PROGRAM, unpack_mint, valid_token_account
from ._rpc_reads import TOKEN_ACCOUNT_LEN as TOKEN_ACCOUNT_LEN
from ._rpc_reads import TOKEN_PROGRAM as TOKEN_PROGRAM

if TYPE_CHECKING:
    from ._ledger import Ledger

ATA_PROGRAM = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
TOKEN_PROGRAMS = frozenset({TOKEN_PROGRAM, TOKEN_2022_PROGRAM})

# Instruction tags of the token programs (the same in both).
INITIALIZE_MINT2 = 20
MINT_TO_CHECKED = 14
BURN_CHECKED = 15
TRANSFER_CHECKED = 12
TRANSFER_CHECKED_LEN = 10  # the tag, the amount (u64) and the decimals (u8)
_CREATE_IDEMPOTENT = b"\x01"  # the associated token account program's; Create is b""


def writable(key: Pubkey) -> AccountMeta:
    return AccountMeta(key, False, True)


def signer(key: Pubkey) -> AccountMeta:
    return AccountMeta(key, True, False)


def readonly(key: Pubkey) -> AccountMeta:
    return AccountMeta(key, False, False)


def associated_token_address(
    owner: Pubkey, mint: Pubkey, token_program: Pubkey = TOKEN_PROGRAM
) -> Pubkey:
    """The associated token account of ``owner`` for ``mint`` (a mint of ``token_program``)."""
    return get_associated_token_address(owner, mint, token_program)


def _create_ata(
    data: bytes, payer: Pubkey, owner: Pubkey, mint: Pubkey, token_program: Pubkey
) -> Instruction:
    metas = [
        AccountMeta(payer, True, True),
        writable(associated_token_address(owner, mint, token_program)),
        readonly(owner),
        readonly(mint),
        readonly(sp.ID),
        readonly(token_program),
    ]
    return Instruction(ATA_PROGRAM, data, metas)


def create_ata(
    payer: Pubkey, owner: Pubkey, mint: Pubkey, token_program: Pubkey = TOKEN_PROGRAM
) -> Instruction:
    """The associated token account program's Create (it fails if the account exists)."""
    return _create_ata(b"", payer, owner, mint, token_program)


def create_ata_idempotent(
    payer: Pubkey, owner: Pubkey, mint: Pubkey, token_program: Pubkey = TOKEN_PROGRAM
) -> Instruction:
    """CreateIdempotent: ``owner``'s associated token account for ``mint``, paid by
    ``payer``; nothing happens if it exists already."""
    return _create_ata(_CREATE_IDEMPOTENT, payer, owner, mint, token_program)


def initialize_mint2(
    mint: Pubkey, decimals: int, authority: Pubkey, token_program: Pubkey = TOKEN_PROGRAM
) -> Instruction:
    """InitializeMint2, with no freeze authority."""
    data = bytes([INITIALIZE_MINT2, decimals]) + bytes(authority) + b"\0"
    return Instruction(token_program, data, [writable(mint)])


def _amount(tag: int, amount: int, decimals: int) -> bytes:
    return bytes([tag]) + struct.pack("<QB", amount, decimals)


def mint_to_checked(
    mint: Pubkey,
    destination: Pubkey,
    authority: Pubkey,
    amount: int,
    decimals: int,
    token_program: Pubkey = TOKEN_PROGRAM,
) -> Instruction:
    metas = [writable(mint), writable(destination), signer(authority)]
    return Instruction(token_program, _amount(MINT_TO_CHECKED, amount, decimals), metas)


def burn_checked(
    account: Pubkey,
    mint: Pubkey,
    authority: Pubkey,
    amount: int,
    decimals: int,
    token_program: Pubkey = TOKEN_PROGRAM,
) -> Instruction:
    """BurnChecked; ``authority`` the owner, a delegate or (Token-2022) the permanent delegate."""
    metas = [writable(account), writable(mint), signer(authority)]
    return Instruction(token_program, _amount(BURN_CHECKED, amount, decimals), metas)


def transfer_checked(
    source: Pubkey,
    mint: Pubkey,
    destination: Pubkey,
    authority: Pubkey,
    amount: int,
    decimals: int,
    token_program: Pubkey = TOKEN_PROGRAM,
) -> Instruction:
    """TransferChecked of ``amount`` base units; ``authority`` the source's owner or delegate."""
    metas = [writable(source), readonly(mint), writable(destination), signer(authority)]
    return Instruction(token_program, _amount(TRANSFER_CHECKED, amount, decimals), metas)


# Accounts.


@dataclass(frozen=True)
class TokenAccount:
    mint: Pubkey
    owner: Pubkey
    amount: int  # base units


@dataclass(frozen=True)
class MintInfo:
    decimals: int
    supply: int  # base units
    mint_authority: Pubkey | None  # None: no more can ever be minted


@dataclass(frozen=True)
class TokenBalance:
    mint: Pubkey
    amount: int  # base units
    decimals: int


def read_token_account(data: bytes) -> TokenAccount | None:
    """An initialized (or frozen) token account's mint, owner and amount; None if
    ``data`` is not one. Whose account it is (its owner program) is the caller's check."""
    if not valid_token_account(data):
        return None
    amount = int.from_bytes(data[64:72], "little")
    return TokenAccount(Pubkey(data[:32]), Pubkey(data[32:64]), amount)


def read_mint(data: bytes) -> MintInfo | None:
    """An initialized mint's decimals, supply and mint authority; None if ``data``
    is not one. Whose account it is (its owner program) is the caller's check."""
    mint = unpack_mint(data)
    if mint is None:
        return None
    authority = mint["mintAuthority"]
    return MintInfo(
        mint["decimals"],
        int(mint["supply"]),
        None if authority is None else Pubkey.from_string(authority),
    )


async def token_balance(ledger: Ledger, owner: Pubkey, mint: Pubkey) -> TokenBalance | None:
    """What ``owner``'s associated token account holds of ``mint`` (0 if it has no
    such account); None if ``mint`` is not a mint on ``ledger``."""
    account = await ledger.account(mint)
    info = read_mint(account.data) if account and account.owner in TOKEN_PROGRAMS else None
    if account is None or info is None:
        return None
    held = await ledger.account(associated_token_address(owner, mint, account.owner))
    holding = read_token_account(held.data) if held and held.owner == account.owner else None
    amount = holding.amount if holding is not None and holding.mint == mint else 0
    return TokenBalance(mint, amount, info.decimals)
