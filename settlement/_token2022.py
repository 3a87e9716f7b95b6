"""SPL Token-2022 and associated-token-account instructions, encoded by hand
(solders has none, and solana-py's `spl` knows no Token-2022 extensions).

Only what licences use: a mint's NonTransferable, PermanentDelegate and
MetadataPointer extensions, InitializeMint2, the token-metadata interface
(Initialize, UpdateField; Token-2022 executes it on a mint that points at
itself), MintToChecked, BurnChecked and TransferChecked, and the associated
token account's Create. The instructions both token programs share are
`_spl`'s, bound here to Token-2022. The sizes of a mint's extensions are here
too: a mint account is created for its fixed extensions and paid for its final
size.
"""

from __future__ import annotations

import hashlib
import struct

from solders.instruction import Instruction
from solders.pubkey import Pubkey

from . import _spl
from ._rpc_reads import TOKEN_2022_PROGRAM, TOKEN_ACCOUNT_LEN
from ._spl import ATA_PROGRAM as ATA_PROGRAM
from ._spl import readonly as _readonly
from ._spl import signer as _signer
from ._spl import writable as _writable

TOKEN_2022 = TOKEN_2022_PROGRAM

# A mint with extensions: its base padded to a token account's length, one
# account-type byte, then type-length-value entries (2 + 2 bytes of header each).
EXTENSIONS_START = TOKEN_ACCOUNT_LEN + 1
TLV_HEADER = 4
NON_TRANSFERABLE_LEN = TLV_HEADER
PERMANENT_DELEGATE_LEN = TLV_HEADER + 32
METADATA_POINTER_LEN = TLV_HEADER + 64

_NON_TRANSFERABLE = 32
_PERMANENT_DELEGATE = 35
_METADATA_POINTER = 39  # then 0: Initialize


def _discriminator(name: str) -> bytes:
    # The token-metadata interface names its instructions by a hash, not an index.
    return hashlib.sha256(f"spl_token_metadata_interface:{name}".encode()).digest()[:8]


METADATA_INITIALIZE = _discriminator("initialize_account")
METADATA_UPDATE_FIELD = _discriminator("updating_field")
FIELD_KEY = 3  # the Field enum's Key(String): an additional field


def _string(text: str) -> bytes:
    """Borsh: a u32 length, then UTF-8."""
    raw = text.encode()
    return struct.pack("<I", len(raw)) + raw


def metadata_len(name: str, symbol: str, uri: str, fields: list[tuple[str, str]]) -> int:
    """Bytes of a TokenMetadata extension's value (Borsh, as Token-2022 stores it)."""
    strings = [name, symbol, uri, *(text for pair in fields for text in pair)]
    return 32 + 32 + sum(4 + len(s.encode()) for s in strings) + 4


def initialize_non_transferable_mint(mint: Pubkey) -> Instruction:
    return Instruction(TOKEN_2022, bytes([_NON_TRANSFERABLE]), [_writable(mint)])


def initialize_permanent_delegate(mint: Pubkey, delegate: Pubkey) -> Instruction:
    data = bytes([_PERMANENT_DELEGATE]) + bytes(delegate)
    return Instruction(TOKEN_2022, data, [_writable(mint)])


def initialize_metadata_pointer(mint: Pubkey, address: Pubkey) -> Instruction:
    """With no authority: where the metadata lives can never change."""
    data = bytes([_METADATA_POINTER, 0]) + bytes(32) + bytes(address)
    return Instruction(TOKEN_2022, data, [_writable(mint)])


def initialize_mint2(mint: Pubkey, decimals: int, authority: Pubkey) -> Instruction:
    """InitializeMint2, with no freeze authority."""
    return _spl.initialize_mint2(mint, decimals, authority, TOKEN_2022)


def initialize_metadata(
    mint: Pubkey, update_authority: Pubkey, mint_authority: Pubkey, name: str, symbol: str, uri: str
) -> Instruction:
    """The token-metadata interface's Initialize, on a mint that holds its own metadata."""
    data = METADATA_INITIALIZE + _string(name) + _string(symbol) + _string(uri)
    metas = [
        _writable(mint),
        _readonly(update_authority),
        _readonly(mint),
        _signer(mint_authority),
    ]
    return Instruction(TOKEN_2022, data, metas)


def update_metadata_field(
    mint: Pubkey, update_authority: Pubkey, key: str, value: str
) -> Instruction:
    """UpdateField of an additional key (Token-2022 adds it and grows the account)."""
    data = METADATA_UPDATE_FIELD + bytes([FIELD_KEY]) + _string(key) + _string(value)
    return Instruction(TOKEN_2022, data, [_writable(mint), _signer(update_authority)])


def associated_address(owner: Pubkey, mint: Pubkey) -> Pubkey:
    """The Token-2022 associated token account of ``owner`` for ``mint``."""
    return _spl.associated_token_address(owner, mint, TOKEN_2022)


def create_associated(payer: Pubkey, owner: Pubkey, mint: Pubkey) -> Instruction:
    """The associated token account program's Create (fails if it exists)."""
    return _spl.create_ata(payer, owner, mint, TOKEN_2022)


def mint_to_checked(
    mint: Pubkey, account: Pubkey, authority: Pubkey, amount: int, decimals: int
) -> Instruction:
    return _spl.mint_to_checked(mint, account, authority, amount, decimals, TOKEN_2022)


def burn_checked(
    account: Pubkey, mint: Pubkey, authority: Pubkey, amount: int, decimals: int
) -> Instruction:
    """BurnChecked; ``authority`` the owner, a delegate or the permanent delegate."""
    return _spl.burn_checked(account, mint, authority, amount, decimals, TOKEN_2022)


def transfer_checked(
    source: Pubkey, mint: Pubkey, destination: Pubkey, owner: Pubkey, amount: int, decimals: int
) -> Instruction:
    return _spl.transfer_checked(source, mint, destination, owner, amount, decimals, TOKEN_2022)
