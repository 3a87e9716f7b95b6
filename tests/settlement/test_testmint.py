"""The test mint of local ledgers: made once, the same on every ledger, granted by
the faucet with the lamports at the faucet's cost; on the embedded ledger and on
a `mercato localnet` in another process, read back through its JSON-RPC."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from solders.keypair import Keypair

from mercato.settlement import (
    TEST_MINT,
    TEST_MINT_AUTHORITY,
    TEST_MINT_DECIMALS,
    TOKEN_AIRDROP,
    TOKEN_PROGRAM,
    LedgerError,
    RpcLedger,
    associated_token_address,
    ensure_test_mint,
    fund_tokens,
    open_embedded_ledger,
    read_mint,
    read_token_account,
    token_balance,
)

SOL = 1_000_000_000


async def held(ledger, owner) -> int | None:
    found = await token_balance(ledger, owner, TEST_MINT)
    return None if found is None else found.amount


async def test_the_faucet_grants_test_tokens_once_the_ledger_has_the_mint(
    tmp_path: Path,
) -> None:
    async with open_embedded_ledger(tmp_path / "ledger.db") as ledger:
        early = Keypair().pubkey()
        await ledger.airdrop(early, SOL)  # no test mint yet: lamports only
        assert await held(ledger, early) is None
        assert await ledger.account(associated_token_address(early, TEST_MINT)) is None

        await ensure_test_mint(ledger)
        await ensure_test_mint(ledger)  # once is enough
        account = await ledger.account(TEST_MINT)
        assert account is not None and account.owner == TOKEN_PROGRAM
        mint = read_mint(account.data)
        assert mint is not None
        assert (mint.decimals, mint.supply) == (TEST_MINT_DECIMALS, 0)
        assert mint.mint_authority == TEST_MINT_AUTHORITY.pubkey()

        who = Keypair().pubkey()
        await ledger.airdrop(who, 2 * SOL)
        # The faucet paid the token account's rent and the fee: the SOL is exact.
        assert await ledger.balance(who) == 2 * SOL
        assert await held(ledger, who) == TOKEN_AIRDROP == 1_000 * 10**6
        await ledger.airdrop(who, 1)
        assert await held(ledger, who) == 2 * TOKEN_AIRDROP
        assert await ledger.balance(who) == 2 * SOL + 1
        await fund_tokens(ledger, who, 5)
        assert await held(ledger, who) == 2 * TOKEN_AIRDROP + 5
        data = (await ledger.account(associated_token_address(who, TEST_MINT))).data
        holding = read_token_account(data)
        assert holding is not None and (holding.mint, holding.owner) == (TEST_MINT, who)
        assert read_token_account(account.data) is None and read_mint(data) is None
        # An account the faucet never saw, funded with tokens alone: no SOL of its own.
        bare = Keypair().pubkey()
        await fund_tokens(ledger, bare, 7)
        assert await held(ledger, bare) == 7 and await ledger.balance(bare) == 0
        supply = read_mint((await ledger.account(TEST_MINT)).data)
        assert supply is not None and supply.supply == 2 * TOKEN_AIRDROP + 12

    # Journaled: a restart keeps the mint and every holding.
    async with open_embedded_ledger(tmp_path / "ledger.db") as ledger:
        assert await held(ledger, who) == 2 * TOKEN_AIRDROP + 5
        await ledger.airdrop(who, 1)
        assert await held(ledger, who) == 3 * TOKEN_AIRDROP + 5


async def test_the_test_mint_is_the_same_everywhere_and_needs_a_faucet(tmp_path: Path) -> None:
    for name in ("a.db", "b.db"):
        async with open_embedded_ledger(tmp_path / name) as ledger:
            await ensure_test_mint(ledger)
            assert (await ledger.account(TEST_MINT)) is not None
    async with open_embedded_ledger(tmp_path / "c.db") as ledger:
        ledger.faucet = False  # as a cluster: no faucet to make it with
        with pytest.raises(LedgerError, match="no test mint, and no faucet"):
            await fund_tokens(ledger, Keypair().pubkey(), 1)


async def test_a_localnet_has_the_test_mint_and_its_airdrops_grant_tokens(
    start_localnet,
) -> None:
    localnet = start_localnet()
    url = localnet.url

    async def call(method: str, *params):
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        async with httpx.AsyncClient() as client:
            answer = (await client.post(url, json=body, timeout=10)).json()
        assert "error" not in answer, answer
        return answer["result"]

    parsed = {"encoding": "jsonParsed"}
    mint = (await call("getAccountInfo", str(TEST_MINT), parsed))["value"]  # made at start
    assert mint["owner"] == str(TOKEN_PROGRAM)
    assert mint["data"]["parsed"]["info"]["decimals"] == TEST_MINT_DECIMALS

    ledger = RpcLedger(url, "localnet", faucet=True)
    try:
        who = Keypair().pubkey()
        await ledger.airdrop(who, 3 * SOL)
        assert await ledger.balance(who) == 3 * SOL
        account = associated_token_address(who, TEST_MINT)
        balance = (await call("getTokenAccountBalance", str(account)))["value"]
        assert balance["amount"] == str(TOKEN_AIRDROP) and balance["decimals"] == 6
        assert balance["uiAmountString"] == "1000"
        owned = await call("getTokenAccountsByOwner", str(who), {"mint": str(TEST_MINT)}, parsed)
        assert [a["pubkey"] for a in owned["value"]] == [str(account)]
        await fund_tokens(ledger, who, 1)
        assert await held(ledger, who) == TOKEN_AIRDROP + 1
    finally:
        await ledger.aclose()
