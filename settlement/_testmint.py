"""The test mint: an SPL token for local ledgers, the same on every one.

x402 buyers pay in an SPL token; on the embedded ledger and on `mercato
localnet` that token is this one. Its address (`TEST_MINT`) and its mint
authority (`TEST_MINT_AUTHORITY`) are keypairs derived from fixed seeds, so
every local ledger has the same mint and anyone may mint it: it is test money,
like the SOL the faucet makes. SPL Token (not Token-2022), 6 decimals, no
freeze authority.

- `ensure_test_mint(ledger)` creates it where it is missing (the localnet at
  start, a node on a ledger with a faucet before it funds its wallet).
- A ledger's faucet (`EmbeddedLedger.airdrop`, and so the localnet's
  requestAirdrop) then also mints `TOKEN_AIRDROP` to the recipient's
  associated token account (`grant_transaction`): the mint authority pays the
  account's rent and the fee, topped up from the faucet itself, so the
  recipient's SOL is exactly what it asked for.
- `fund_tokens(ledger, owner, amount)` mints any amount to anyone.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from solders import system_program as sp
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.transaction import Transaction

from ._errors import LedgerError
from ._spl import (
    MINT_LEN,
    TOKEN_PROGRAM,
    associated_token_address,
    create_ata_idempotent,
    initialize_mint2,
    mint_to_checked,
    read_mint,
)

if TYPE_CHECKING:
    from ._ledger import Ledger

_MINT_KEY = Keypair.from_seed(hashlib.sha256(b"mercato test mint").digest())
TEST_MINT = _MINT_KEY.pubkey()
TEST_MINT_AUTHORITY = Keypair.from_seed(hashlib.sha256(b"mercato test mint: authority").digest())
TEST_MINT_DECIMALS = 6
TOKEN_AIRDROP = 1_000 * 10**TEST_MINT_DECIMALS  # what a faucet grant mints: 1,000 tokens
# The authority pays each grant's account rent and fee: the faucet tops it up
# by AUTHORITY_TOP_UP whenever it holds less than AUTHORITY_FLOOR.
AUTHORITY_FLOOR = 10**9
AUTHORITY_TOP_UP = 100 * 10**9


def create_transaction(blockhash: Hash, rent: int) -> Transaction:
    """The test mint's creation, paid by its authority (``rent``: a mint's rent-exempt minimum)."""
    payer = TEST_MINT_AUTHORITY.pubkey()
    params = sp.CreateAccountParams(
        from_pubkey=payer, to_pubkey=TEST_MINT, lamports=rent, space=MINT_LEN, owner=TOKEN_PROGRAM
    )
    instructions = [
        sp.create_account(params),
        initialize_mint2(TEST_MINT, TEST_MINT_DECIMALS, payer),
    ]
    message = Message(instructions, payer)
    return Transaction([TEST_MINT_AUTHORITY, _MINT_KEY], message, blockhash)


def grant_transaction(owner: Pubkey, amount: int, blockhash: Hash) -> Transaction:
    """``amount`` base units of the test mint to ``owner``'s associated token
    account, created if missing; the authority pays for both."""
    payer = TEST_MINT_AUTHORITY.pubkey()
    account = associated_token_address(owner, TEST_MINT)
    instructions = [
        create_ata_idempotent(payer, owner, TEST_MINT),
        mint_to_checked(TEST_MINT, account, payer, amount, TEST_MINT_DECIMALS),
    ]
    return Transaction([TEST_MINT_AUTHORITY], Message(instructions, payer), blockhash)


async def _has_test_mint(ledger: Ledger) -> bool:
    account = await ledger.account(TEST_MINT)
    if account is None:
        return False
    if account.owner != TOKEN_PROGRAM or read_mint(account.data) is None:
        raise LedgerError(f"{TEST_MINT} on the {ledger.name} ledger is not the test mint")
    return True


async def _fund_authority(ledger: Ledger) -> None:
    if await ledger.balance(TEST_MINT_AUTHORITY.pubkey()) < AUTHORITY_FLOOR:
        await ledger.airdrop(TEST_MINT_AUTHORITY.pubkey(), AUTHORITY_TOP_UP)


async def ensure_test_mint(ledger: Ledger) -> None:
    """Create the test mint on ``ledger`` if it has none. LedgerError if it has
    none and no faucet (the test mint is for local ledgers), or refuses."""
    if await _has_test_mint(ledger):
        return
    if not ledger.faucet:
        raise LedgerError(
            f"the {ledger.name} ledger has no test mint, and no faucet to make one with: "
            "the test mint is for the embedded ledger and `mercato localnet`"
        )
    await _fund_authority(ledger)
    tx = create_transaction(await ledger.blockhash(), await ledger.rent(MINT_LEN))
    try:
        await ledger.send(tx)
    except LedgerError:
        if not await _has_test_mint(ledger):  # else another made it meanwhile
            raise


async def fund_tokens(ledger: Ledger, owner: Pubkey, amount: int) -> str:
    """Mint ``amount`` base units of the test mint to ``owner``'s associated token
    account (created if missing, at the authority's cost); the signature."""
    if not 0 <= amount < 2**64:
        raise ValueError(f"{amount} is not an amount of base units (a u64)")
    await ensure_test_mint(ledger)
    await _fund_authority(ledger)
    return await ledger.send(grant_transaction(owner, amount, await ledger.blockhash()))
