"""The localnet's read-only JSON-RPC methods (settlement/_rpc_reads.py), driven
in-process through `LocalnetRpc.answer` on a real ledger: SPL Token and
Token-2022 mints and accounts are made with real transactions, and every answer
is checked against the shape a cluster gives (as web3.js and kit parse it)."""

from __future__ import annotations

import base64
import json
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from solders import system_program as sp
from solders.account import Account
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.token.associated import get_associated_token_address
from solders.transaction import Transaction

from mercato.settlement import (
    NONCE_ACCOUNT_SIZE,
    STAKE_ACCOUNT_SIZE,
    ClusterLedger,
    LocalnetRpc,
    open_cluster_ledger,
    read_nonce,
)
from mercato.settlement import _rpc_reads as reads
from mercato.settlement._programs import STAKE_PROGRAM, stake_initialize

SOL = 1_000_000_000
TOKEN = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
TOKEN_2022 = Pubkey.from_string("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb")
# The associated token account program, as LiteSVM loads it (and as on every cluster).
ATA_PROGRAM = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
COMPUTE_BUDGET = Pubkey.from_string("ComputeBudget111111111111111111111111111111")
CLOCK = "SysvarC1ock11111111111111111111111111111111"


# JSON-RPC in-process.


async def call(rpc: LocalnetRpc, method: str, *params: Any) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)}
    answer: dict[str, Any] = json.loads(await rpc.answer(json.dumps(body).encode()))
    assert answer["id"] == 7
    return answer


async def result(rpc: LocalnetRpc, method: str, *params: Any) -> Any:
    answer = await call(rpc, method, *params)
    assert "error" not in answer, answer
    return answer["result"]


async def value(rpc: LocalnetRpc, method: str, *params: Any) -> Any:
    answer = await result(rpc, method, *params)
    assert set(answer) == {"context", "value"} and answer["context"]["slot"] >= 0, answer
    return answer["value"]


async def refused(rpc: LocalnetRpc, method: str, *params: Any, code: int = -32602) -> str:
    answer = await call(rpc, method, *params)
    assert answer.get("error", {}).get("code") == code, answer
    message: str = answer["error"]["message"]
    return message


# SPL Token instructions, built by hand (solders has none).


def initialize_mint(program: Pubkey, mint: Pubkey, decimals: int, authority: Pubkey) -> Instruction:
    """InitializeMint2 (20), with no freeze authority."""
    data = bytes([20, decimals]) + bytes(authority) + b"\0"
    return Instruction(program, data, [AccountMeta(mint, False, True)])


def initialize_account(
    program: Pubkey, account: Pubkey, mint: Pubkey, owner: Pubkey
) -> Instruction:
    """InitializeAccount3 (18)."""
    metas = [AccountMeta(account, False, True), AccountMeta(mint, False, False)]
    return Instruction(program, bytes([18]) + bytes(owner), metas)


def mint_to(
    program: Pubkey, mint: Pubkey, account: Pubkey, authority: Pubkey, amount: int
) -> Instruction:
    """MintTo (7)."""
    metas = [
        AccountMeta(mint, False, True),
        AccountMeta(account, False, True),
        AccountMeta(authority, True, False),
    ]
    return Instruction(program, bytes([7]) + struct.pack("<Q", amount), metas)


def approve(
    program: Pubkey, account: Pubkey, delegate: Pubkey, owner: Pubkey, amount: int
) -> Instruction:
    """Approve (4)."""
    metas = [
        AccountMeta(account, False, True),
        AccountMeta(delegate, False, False),
        AccountMeta(owner, True, False),
    ]
    return Instruction(program, bytes([4]) + struct.pack("<Q", amount), metas)


def create_associated(payer: Pubkey, owner: Pubkey, mint: Pubkey, program: Pubkey) -> Instruction:
    """The associated token account program's Create."""
    metas = [
        AccountMeta(payer, True, True),
        AccountMeta(get_associated_token_address(owner, mint, program), False, True),
        AccountMeta(owner, False, False),
        AccountMeta(mint, False, False),
        AccountMeta(sp.ID, False, False),
        AccountMeta(program, False, False),
    ]
    return Instruction(ATA_PROGRAM, b"", metas)


def create(payer: Pubkey, new: Pubkey, lamports: int, space: int, owner: Pubkey) -> Instruction:
    return sp.create_account(
        {
            "from_pubkey": payer,
            "to_pubkey": new,
            "lamports": lamports,
            "space": space,
            "owner": owner,
        }
    )


async def send(ledger: ClusterLedger, signers: list[Keypair], *instructions: Instruction) -> None:
    message = Message(list(instructions), signers[0].pubkey())
    await ledger.send(Transaction(signers, message, await ledger.blockhash()))


@dataclass
class Tokens:
    payer: Keypair
    alice: Keypair
    bob: Keypair
    delegate: Pubkey
    mint: Pubkey  # SPL Token, 6 decimals
    alice_account: Pubkey  # alice's associated account: 1.5 tokens, 0.5 delegated
    bob_account: Pubkey  # a plain account: 250 base units
    mint22: Pubkey  # Token-2022, 2 decimals, a close authority and a transfer fee
    alice_account22: Pubkey  # immutable owner, 123.45 tokens


@pytest.fixture
async def ledger(tmp_path: Path):
    async with open_cluster_ledger(tmp_path / "ledger.db") as opened:
        yield opened


@pytest.fixture
def rpc(ledger: ClusterLedger) -> LocalnetRpc:
    return LocalnetRpc(ledger)


@pytest.fixture
async def tokens(ledger: ClusterLedger) -> Tokens:
    payer, alice, bob = Keypair(), Keypair(), Keypair()
    await ledger.airdrop(payer.pubkey(), 100 * SOL)
    who = payer.pubkey()
    mint, bob_account, delegate = Keypair(), Keypair(), Keypair().pubkey()
    alice_account = get_associated_token_address(alice.pubkey(), mint.pubkey(), TOKEN)
    await send(
        ledger,
        [payer, mint, bob_account, alice],
        create(who, mint.pubkey(), await ledger.rent(82), 82, TOKEN),
        initialize_mint(TOKEN, mint.pubkey(), 6, who),
        create_associated(who, alice.pubkey(), mint.pubkey(), TOKEN),
        create(who, bob_account.pubkey(), await ledger.rent(165), 165, TOKEN),
        initialize_account(TOKEN, bob_account.pubkey(), mint.pubkey(), bob.pubkey()),
        mint_to(TOKEN, mint.pubkey(), alice_account, who, 1_500_000),
        mint_to(TOKEN, mint.pubkey(), bob_account.pubkey(), who, 250),
        approve(TOKEN, alice_account, delegate, alice.pubkey(), 500_000),
    )

    # Token-2022: a mint with MintCloseAuthority and TransferFeeConfig, an account
    # with ImmutableOwner (and the TransferFeeAmount its mint requires).
    mint22, account22 = Keypair(), Keypair()
    mint_space = 165 + 1 + (4 + 32) + (4 + 108)
    account_space = 165 + 1 + 4 + (4 + 8)
    close_authority = bytes([25, 1]) + bytes(who)
    transfer_fee = bytes([26, 0, 1]) + bytes(who) + b"\0" + struct.pack("<HQ", 50, 1_000)
    await send(
        ledger,
        [payer, mint22, account22],
        create(who, mint22.pubkey(), await ledger.rent(mint_space), mint_space, TOKEN_2022),
        Instruction(TOKEN_2022, close_authority, [AccountMeta(mint22.pubkey(), False, True)]),
        Instruction(TOKEN_2022, transfer_fee, [AccountMeta(mint22.pubkey(), False, True)]),
        initialize_mint(TOKEN_2022, mint22.pubkey(), 2, who),
        create(
            who, account22.pubkey(), await ledger.rent(account_space), account_space, TOKEN_2022
        ),
        Instruction(TOKEN_2022, bytes([22]), [AccountMeta(account22.pubkey(), False, True)]),
        initialize_account(TOKEN_2022, account22.pubkey(), mint22.pubkey(), alice.pubkey()),
        mint_to(TOKEN_2022, mint22.pubkey(), account22.pubkey(), who, 12_345),
    )
    return Tokens(
        payer,
        alice,
        bob,
        delegate,
        mint.pubkey(),
        alice_account,
        bob_account.pubkey(),
        mint22.pubkey(),
        account22.pubkey(),
    )


def amount(ui: float, decimals: int, raw: str, text: str) -> dict[str, Any]:
    return {"uiAmount": ui, "decimals": decimals, "amount": raw, "uiAmountString": text}


def raw_data(encoded: list[str]) -> bytes:
    assert encoded[1] == "base64"
    return base64.b64decode(encoded[0])


def unzstd(frame: bytes) -> bytes:
    """Read a zstd frame of raw blocks (all the localnet writes), by RFC 8878."""
    assert frame[:4] == b"\x28\xb5\x2f\xfd"
    descriptor, at = frame[4], 5
    assert descriptor & 0x20  # single segment: no window descriptor
    at += {0: 1, 1: 2, 2: 4, 3: 8}[descriptor >> 6]
    out = b""
    while True:
        header = int.from_bytes(frame[at : at + 3], "little")
        size, at = header >> 3, at + 3
        assert (header >> 1) & 3 == 0  # raw
        out += frame[at : at + size]
        at += size
        if header & 1:
            assert at == len(frame)
            return out


# Tokens.


async def test_spl_token_mints_and_accounts_read_as_on_a_cluster(
    rpc: LocalnetRpc, tokens: Tokens
) -> None:
    t = tokens
    assert t.alice_account == get_associated_token_address(t.alice.pubkey(), t.mint)
    mint = await value(rpc, "getAccountInfo", str(t.mint), {"encoding": "jsonParsed"})
    assert mint["owner"] == str(TOKEN) and mint["space"] == 82 and not mint["executable"]
    assert mint["data"] == {
        "program": "spl-token",
        "parsed": {
            "type": "mint",
            "info": {
                "mintAuthority": str(t.payer.pubkey()),
                "supply": "1500250",
                "decimals": 6,
                "isInitialized": True,
                "freezeAuthority": None,
            },
        },
        "space": 82,
    }
    account = await value(rpc, "getAccountInfo", str(t.alice_account), {"encoding": "jsonParsed"})
    assert account["data"]["parsed"] == {
        "type": "account",
        "info": {
            "mint": str(t.mint),
            "owner": str(t.alice.pubkey()),
            "tokenAmount": amount(1.5, 6, "1500000", "1.5"),
            "delegate": str(t.delegate),
            "state": "initialized",
            "isNative": False,
            "delegatedAmount": amount(0.5, 6, "500000", "0.5"),
        },
    }
    bob = await value(rpc, "getTokenAccountBalance", str(t.bob_account))
    assert bob == amount(0.00025, 6, "250", "0.00025")
    supply = await value(rpc, "getTokenSupply", str(t.mint), {"commitment": "confirmed"})
    assert supply == amount(1.50025, 6, "1500250", "1.50025")
    largest = await value(rpc, "getTokenLargestAccounts", str(t.mint))
    assert largest == [
        {"address": str(t.alice_account), **amount(1.5, 6, "1500000", "1.5")},
        {"address": str(t.bob_account), **amount(0.00025, 6, "250", "0.00025")},
    ]

    # By owner: filtered by mint or by program, parsed or not.
    parsed = {"encoding": "jsonParsed"}
    by_mint = await value(
        rpc, "getTokenAccountsByOwner", str(t.alice.pubkey()), {"mint": str(t.mint)}, parsed
    )
    assert [a["pubkey"] for a in by_mint] == [str(t.alice_account)]
    assert by_mint[0]["account"] == account
    by_program = await value(
        rpc,
        "getTokenAccountsByOwner",
        str(t.alice.pubkey()),
        {"programId": str(TOKEN_2022)},
        {"encoding": "base64", "dataSlice": {"offset": 0, "length": 32}},
    )
    assert [a["pubkey"] for a in by_program] == [str(t.alice_account22)]
    assert raw_data(by_program[0]["account"]["data"]) == bytes(t.mint22)
    assert by_program[0]["account"]["space"] == 165 + 1 + 4 + 12
    assert (
        await value(
            rpc, "getTokenAccountsByOwner", str(t.bob.pubkey()), {"programId": str(TOKEN_2022)}
        )
        == []
    )
    delegated = await value(
        rpc, "getTokenAccountsByDelegate", str(t.delegate), {"programId": str(TOKEN)}, parsed
    )
    assert [a["pubkey"] for a in delegated] == [str(t.alice_account)]
    assert (
        await value(rpc, "getTokenAccountsByDelegate", str(t.bob.pubkey()), {"mint": str(t.mint)})
        == []
    )

    # Refused as a cluster refuses them.
    assert "not a Token account" in await refused(rpc, "getTokenAccountBalance", str(t.mint))
    assert "could not find account" in await refused(
        rpc, "getTokenAccountBalance", str(Keypair().pubkey())
    )
    assert "not a Token mint" in await refused(rpc, "getTokenSupply", str(t.payer.pubkey()))
    assert "could not be unpacked" in await refused(rpc, "getTokenSupply", str(t.alice_account))
    owner = str(t.alice.pubkey())
    assert "unrecognized Token program" in await refused(
        rpc, "getTokenAccountsByOwner", owner, {"programId": str(sp.ID)}
    )
    assert "could not find mint" in await refused(
        rpc, "getTokenAccountsByOwner", owner, {"mint": str(Keypair().pubkey())}
    )
    for bad_filter in ({}, {"mint": str(t.mint), "programId": str(TOKEN)}, {"mint": 5}):
        await refused(rpc, "getTokenAccountsByOwner", owner, bad_filter)
    await refused(rpc, "getTokenAccountsByOwner", owner)
    await refused(rpc, "getTokenLargestAccounts", str(t.alice_account))


async def test_token_2022_extensions_are_parsed(rpc: LocalnetRpc, tokens: Tokens) -> None:
    t = tokens
    who = str(t.payer.pubkey())
    mint = await value(rpc, "getAccountInfo", str(t.mint22), {"encoding": "jsonParsed"})
    assert mint["data"]["program"] == "spl-token-2022"
    assert mint["data"]["space"] == 165 + 1 + 36 + 112
    info = mint["data"]["parsed"]["info"]
    epoch = info["extensions"][1]["state"]["olderTransferFee"]["epoch"]
    fee = {"epoch": epoch, "maximumFee": 1_000, "transferFeeBasisPoints": 50}
    assert info == {
        "mintAuthority": who,
        "supply": "12345",
        "decimals": 2,
        "isInitialized": True,
        "freezeAuthority": None,
        "extensions": [
            {"extension": "mintCloseAuthority", "state": {"closeAuthority": who}},
            {
                "extension": "transferFeeConfig",
                "state": {
                    "transferFeeConfigAuthority": who,
                    "withdrawWithheldAuthority": None,
                    "withheldAmount": 0,
                    "olderTransferFee": fee,
                    "newerTransferFee": fee,
                },
            },
        ],
    }
    account = await value(rpc, "getAccountInfo", str(t.alice_account22), {"encoding": "jsonParsed"})
    assert account["data"]["parsed"] == {
        "type": "account",
        "info": {
            "mint": str(t.mint22),
            "owner": str(t.alice.pubkey()),
            "tokenAmount": amount(123.45, 2, "12345", "123.45"),
            "state": "initialized",
            "isNative": False,
            "extensions": [
                {"extension": "immutableOwner"},
                {"extension": "transferFeeAmount", "state": {"withheldAmount": 0}},
            ],
        },
    }
    assert await value(rpc, "getTokenSupply", str(t.mint22)) == amount(123.45, 2, "12345", "123.45")
    everything = await result(
        rpc, "getProgramAccounts", str(TOKEN_2022), {"encoding": "jsonParsed"}
    )
    kinds = {a["pubkey"]: a["account"]["data"]["parsed"]["type"] for a in everything}
    assert kinds == {str(t.mint22): "mint", str(t.alice_account22): "account"}


def test_token_parsing_edge_cases() -> None:
    # Amounts as agave writes them: trimmed strings; no uiAmount past 19 decimals.
    assert reads.token_amount(0, 9) == amount(0.0, 9, "0", "0")
    assert reads.token_amount(10, 0) == amount(10.0, 0, "10", "10")
    assert reads.token_amount(1, 9)["uiAmountString"] == "0.000000001"
    assert reads.token_amount(2**64 - 1, 20)["uiAmount"] is None
    # An uninitialized token account, a bad COption tag: not parsable (base64 instead).
    blank = bytes(165)
    assert reads.parse_token(blank, 6) is None
    account = bytearray(165)
    account[108] = 1
    assert reads.parse_token(bytes(account), None) is None  # its mint is unknown
    assert reads.parse_token(bytes(account), 0) is not None
    account[72] = 7
    assert reads.parse_token(bytes(account), 0) is None
    # Extensions: a truncated list is dropped whole, an unknown type is named so.
    assert reads.parse_extensions(b"\x03\x00\x20\x00" + bytes(16)) == []
    assert reads.parse_extensions(b"\x63\x00\x01\x00\x00") == [
        {"extension": "unparseableExtension"}
    ]
    assert reads.parse_extensions(b"\x08\x00\x01\x00\x01" + bytes(6)) == [
        {"extension": "memoTransfer", "state": {"requireIncomingTransferMemos": True}}
    ]
    scaled = bytes(32) + struct.pack("<dqd", 1.0, 5, 1e20)
    assert reads.parse_extensions(b"\x19\x00\x38\x00" + scaled) == [
        {
            "extension": "scaledUiAmountConfig",
            "state": {
                "authority": None,
                "multiplier": "1",
                "newMultiplierEffectiveTimestamp": 5,
                "newMultiplier": "100000000000000000000",
            },
        }
    ]
    # A multisig: its signers, without the empty slots.
    signer = Keypair().pubkey()
    multisig = bytes([1, 1, 1]) + bytes(signer) + bytes(32 * 10)
    assert reads.parse_token(multisig, None) == {
        "type": "multisig",
        "info": {
            "numRequiredSigners": 1,
            "numValidSigners": 1,
            "isInitialized": True,
            "signers": [str(signer)],
        },
    }


# Accounts and encodings.


async def test_account_info_encodings_slices_and_null(
    rpc: LocalnetRpc, ledger: ClusterLedger, tokens: Tokens
) -> None:
    t = tokens
    mint_bytes = raw_data(
        (await value(rpc, "getAccountInfo", str(t.mint), {"encoding": "base64"}))["data"]
    )
    assert len(mint_bytes) == 82
    # No encoding: a bare base58 string (a cluster's default, "binary").
    assert (await value(rpc, "getAccountInfo", str(t.mint)))["data"] == reads.b58encode(mint_bytes)
    base58 = await value(rpc, "getAccountInfo", str(t.mint), {"encoding": "base58"})
    assert base58["data"] == [reads.b58encode(mint_bytes), "base58"]
    assert reads.b58decode(base58["data"][0]) == mint_bytes
    # Base58 only up to 128 bytes, as on a cluster; a slice brings it under.
    message = await refused(rpc, "getAccountInfo", str(t.alice_account), {"encoding": "base58"})
    assert "128 bytes" in message
    sliced = await value(
        rpc,
        "getAccountInfo",
        str(t.alice_account),
        {"encoding": "base58", "dataSlice": {"offset": 32, "length": 32}},
    )
    assert sliced["data"] == [str(t.alice.pubkey()), "base58"] and sliced["space"] == 165
    past_the_end = {"encoding": "base64", "dataSlice": {"offset": 500, "length": 8}}
    tail = await value(rpc, "getAccountInfo", str(t.alice_account), past_the_end)
    assert tail["data"] == ["", "base64"]
    # base64+zstd: a valid zstd frame (stored blocks).
    zstd = await value(rpc, "getAccountInfo", str(t.alice_account), {"encoding": "base64+zstd"})
    assert zstd["data"][1] == "base64+zstd"
    frame = base64.b64decode(zstd["data"][0])
    account_bytes = unzstd(frame)
    assert len(account_bytes) == 165 and account_bytes[:32] == bytes(t.mint)
    if shutil.which("zstd"):
        unpacked = await trio.run_process(["zstd", "-d", "-c"], stdin=frame, capture_stdout=True)
        assert unpacked.stdout == account_bytes

    # A wallet in jsonParsed falls back to base64, as on a cluster; no account is null.
    wallet = await value(rpc, "getAccountInfo", str(t.payer.pubkey()), {"encoding": "jsonParsed"})
    assert wallet["data"] == ["", "base64"] and wallet["owner"] == str(sp.ID)
    assert await value(rpc, "getAccountInfo", str(Keypair().pubkey())) is None
    emptied = Keypair().pubkey()
    ledger._svm.set_account(emptied, Account(0, b"", sp.ID))
    assert await value(rpc, "getAccountInfo", str(emptied), {"encoding": "base64"}) is None

    # Sysvars and programs.
    clock = await value(rpc, "getAccountInfo", CLOCK, {"encoding": "jsonParsed"})
    assert clock["data"]["program"] == "sysvar"
    assert clock["data"]["parsed"]["type"] == "clock"
    assert set(clock["data"]["parsed"]["info"]) == {
        "slot",
        "epoch",
        "epochStartTimestamp",
        "leaderScheduleEpoch",
        "unixTimestamp",
    }
    program = await value(rpc, "getAccountInfo", str(TOKEN), {"encoding": "jsonParsed"})
    assert program["executable"] and program["data"]["program"] == "bpfUpgradeableLoader"
    program_data = program["data"]["parsed"]["info"]["programData"]
    held = await value(rpc, "getAccountInfo", program_data, {"encoding": "jsonParsed"})
    assert held["data"]["parsed"]["type"] == "programData"

    # Bad parameters.
    key = str(t.mint)
    for params in (
        ["not a key"],
        [],
        [5],
        [key, {"encoding": "hex"}],
        [key, {"commitment": "max"}],
        [key, {"dataSlice": {"offset": -1, "length": 1}}],
        [key, {"dataSlice": {"offset": 0}}],
        [key, "base64"],
        [key, {}, "extra"],
    ):
        await refused(rpc, "getAccountInfo", *params)
    ahead = {"minContextSlot": ledger.block + 10}
    assert "Minimum context slot" in await refused(rpc, "getAccountInfo", key, ahead, code=-32016)
    for level in ("processed", "confirmed", "finalized"):
        await value(rpc, "getAccountInfo", key, {"commitment": level, "minContextSlot": 0})


async def test_nonce_and_stake_accounts_are_parsed(rpc: LocalnetRpc, ledger: ClusterLedger) -> None:
    payer, nonce, stake = Keypair(), Keypair(), Keypair()
    who = payer.pubkey()
    await ledger.airdrop(who, 10 * SOL)
    await send(
        ledger,
        [payer, nonce],
        *sp.create_nonce_account(who, nonce.pubkey(), who, await ledger.rent(NONCE_ACCOUNT_SIZE)),
    )
    parsed = await value(rpc, "getAccountInfo", str(nonce.pubkey()), {"encoding": "jsonParsed"})
    held = await ledger.account(nonce.pubkey())
    assert held is not None
    stored = read_nonce(held.data)
    assert parsed["data"] == {
        "program": "nonce",
        "parsed": {
            "type": "initialized",
            "info": {
                "authority": str(who),
                "blockhash": str(stored[1]),
                "feeCalculator": {"lamportsPerSignature": "5000"},
            },
        },
        "space": NONCE_ACCOUNT_SIZE,
    }

    reserve = await ledger.rent(STAKE_ACCOUNT_SIZE)
    custodian = Keypair().pubkey()
    await send(
        ledger,
        [payer, stake],
        create(who, stake.pubkey(), reserve + SOL, STAKE_ACCOUNT_SIZE, STAKE_PROGRAM),
        stake_initialize(stake.pubkey(), who, who, 1_900_000_000, custodian),
    )
    parsed = await value(rpc, "getAccountInfo", str(stake.pubkey()), {"encoding": "jsonParsed"})
    assert parsed["data"] == {
        "program": "stake",
        "parsed": {
            "type": "initialized",
            "info": {
                "meta": {
                    "rentExemptReserve": str(reserve),
                    "authorized": {"staker": str(who), "withdrawer": str(who)},
                    "lockup": {
                        "unixTimestamp": 1_900_000_000,
                        "epoch": 0,
                        "custodian": str(custodian),
                    },
                },
                "stake": None,
            },
        },
        "space": STAKE_ACCOUNT_SIZE,
    }
    delegated = bytearray(STAKE_ACCOUNT_SIZE)
    delegated[:4] = (2).to_bytes(4, "little")
    delegated[156:196] = struct.pack("<QQQdQ", 7 * SOL, 3, 2**64 - 1, 0.25, 11)
    info = reads.parse_stake(bytes(delegated))
    assert info is not None and info["type"] == "delegated"
    assert info["info"]["stake"] == {
        "delegation": {
            "voter": str(Pubkey(bytes(32))),
            "stake": str(7 * SOL),
            "activationEpoch": "3",
            "deactivationEpoch": str(2**64 - 1),
            "warmupCooldownRate": 0.25,
        },
        "creditsObserved": 11,
    }


async def test_multiple_accounts_in_order_bounded(rpc: LocalnetRpc, tokens: Tokens) -> None:
    t = tokens
    missing = str(Keypair().pubkey())
    keys = [str(t.mint), missing, str(t.alice_account)]
    accounts = await value(rpc, "getMultipleAccounts", keys)
    assert accounts[1] is None
    assert accounts[0]["data"][1] == "base64"  # getMultipleAccounts' default
    assert raw_data(accounts[2]["data"])[32:64] == bytes(t.alice.pubkey())
    parsed = await value(rpc, "getMultipleAccounts", keys, {"encoding": "jsonParsed"})
    assert [a and a["data"]["parsed"]["type"] for a in parsed] == ["mint", None, "account"]
    assert await value(rpc, "getMultipleAccounts", []) == []
    message = await refused(rpc, "getMultipleAccounts", [missing] * 101)
    assert "max 100" in message
    await refused(rpc, "getMultipleAccounts", [str(t.mint), "nope"])
    await refused(rpc, "getMultipleAccounts", str(t.mint))


async def test_program_accounts_filters_context_and_bounds(
    rpc: LocalnetRpc, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = tokens
    b64 = {"encoding": "base64"}
    mints = await result(
        rpc, "getProgramAccounts", str(TOKEN), {**b64, "filters": [{"dataSize": 82}]}
    )
    assert [m["pubkey"] for m in mints] == [str(t.mint)]
    by_mint = {"memcmp": {"offset": 0, "bytes": str(t.mint)}}
    holders = await result(
        rpc, "getProgramAccounts", str(TOKEN), {**b64, "filters": [{"dataSize": 165}, by_mint]}
    )
    assert sorted(h["pubkey"] for h in holders) == sorted(
        [str(t.alice_account), str(t.bob_account)]
    )
    assert holders == sorted(holders, key=lambda h: bytes(Pubkey.from_string(h["pubkey"])))
    owner_b64 = base64.b64encode(bytes(t.bob.pubkey())).decode()
    by_owner = {"memcmp": {"offset": 32, "bytes": owner_b64, "encoding": "base64"}}
    bobs = await result(
        rpc,
        "getProgramAccounts",
        str(TOKEN),
        {**b64, "filters": ["tokenAccountState", by_owner], "withContext": True},
    )
    assert set(bobs) == {"context", "value"}
    assert [b["pubkey"] for b in bobs["value"]] == [str(t.bob_account)]
    assert bobs["value"][0]["account"]["owner"] == str(TOKEN)
    parsed = await result(rpc, "getProgramAccounts", str(TOKEN), {"encoding": "jsonParsed"})
    assert {p["account"]["data"]["parsed"]["type"] for p in parsed} == {"mint", "account"}
    # The default encoding is binary (base58): token accounts are too big for it.
    assert "128 bytes" in await refused(rpc, "getProgramAccounts", str(TOKEN))
    sliced = await result(
        rpc, "getProgramAccounts", str(TOKEN), {"dataSlice": {"offset": 0, "length": 0}}
    )
    assert len(sliced) == 3 and {s["account"]["data"] for s in sliced} == {""}

    # Bad filters and options, as a cluster refuses them.
    key = str(TOKEN)
    for config in (
        {"filters": [{"dataSize": 82}] * 5},
        {"filters": [{"memcmp": {"offset": 0, "bytes": "0OIl"}}]},
        {"filters": [{"memcmp": {"offset": 0, "bytes": "AAA", "encoding": "base64"}}]},
        {"filters": [{"memcmp": {"offset": 0, "bytes": "1" * 176}}]},
        {"filters": [{"memcmp": {"offset": 0, "bytes": "x", "encoding": "hex"}}]},
        {"filters": [{"memcmp": {"offset": -1, "bytes": "1"}}]},
        {"filters": [{"dataSize": 82, "memcmp": {"offset": 0, "bytes": "1"}}]},
        {"filters": [{"size": 82}]},
        {"filters": {"dataSize": 82}},
        {"withContext": "yes"},
        {"encoding": "jsonParsed", "dataSlice": {"offset": 0, "length": 8}},
    ):
        await refused(rpc, "getProgramAccounts", key, config)
    await refused(rpc, "getProgramAccounts", "not a key")

    # Bounded: beyond the limit the answer is refused, never truncated.
    monkeypatch.setattr(reads, "MAX_SCAN_ACCOUNTS", 2)
    message = await refused(rpc, "getProgramAccounts", key, b64, code=-32012)
    assert "filters" in message
    assert len(await result(rpc, "getProgramAccounts", key, {**b64, "filters": [by_mint]})) == 2


# Fees.


async def test_fee_for_message_is_what_the_ledger_charges(
    rpc: LocalnetRpc, ledger: ClusterLedger
) -> None:
    payer, other = Keypair(), Keypair()
    await ledger.airdrop(payer.pubkey(), 10 * SOL)
    await ledger.airdrop(other.pubkey(), SOL)
    blockhash = await ledger.blockhash()

    def fee_of(message: Message | MessageV0) -> str:
        return base64.b64encode(bytes(message)).decode()

    pay = sp.transfer({"from_pubkey": payer.pubkey(), "to_pubkey": other.pubkey(), "lamports": 1})
    back = sp.transfer({"from_pubkey": other.pubkey(), "to_pubkey": payer.pubkey(), "lamports": 1})
    one = Message.new_with_blockhash([pay], payer.pubkey(), blockhash)
    two = Message.new_with_blockhash([pay, back], payer.pubkey(), blockhash)
    assert await value(rpc, "getFeeForMessage", fee_of(one)) == 5_000
    assert await value(rpc, "getFeeForMessage", fee_of(two), {"commitment": "processed"}) == 10_000
    v0 = MessageV0.try_compile(payer.pubkey(), [pay], [], blockhash)
    assert await value(rpc, "getFeeForMessage", fee_of(v0)) == 5_000

    # A priority fee: the one the ledger charges, with and without a unit limit.
    price = Instruction(COMPUTE_BUDGET, bytes([3]) + struct.pack("<Q", 250_000), [])
    limit = Instruction(COMPUTE_BUDGET, bytes([2]) + struct.pack("<I", 40_000), [])
    for instructions in ([price, pay], [limit, price, pay]):
        message = Message.new_with_blockhash(instructions, payer.pubkey(), blockhash)
        quoted = await value(rpc, "getFeeForMessage", fee_of(message))
        assert quoted > 5_000
        before = await ledger.balance(payer.pubkey())
        await ledger.send(Transaction([payer], message, blockhash))
        assert before - await ledger.balance(payer.pubkey()) == quoted + 1
    duplicated = Message.new_with_blockhash([price, price, pay], payer.pubkey(), blockhash)
    assert await value(rpc, "getFeeForMessage", fee_of(duplicated)) == 5_000

    for bad in ("not base64!", base64.b64encode(b"\x01\x02").decode(), 5):
        await refused(rpc, "getFeeForMessage", bad)
    await refused(rpc, "getFeeForMessage")

    fees = await result(rpc, "getRecentPrioritizationFees")
    assert fees and fees[-1] == {"slot": ledger.block, "prioritizationFee": 0}
    assert {f["prioritizationFee"] for f in fees} == {0} and len(fees) <= 150
    assert await result(rpc, "getRecentPrioritizationFees", [str(payer.pubkey())]) == fees
    await refused(rpc, "getRecentPrioritizationFees", [str(payer.pubkey())] * 129)
    await refused(rpc, "getRecentPrioritizationFees", ["nope"])


# The cluster: epochs, slots, identity, supply.


async def test_epochs_slots_and_leaders(rpc: LocalnetRpc, ledger: ClusterLedger) -> None:
    schedule = await result(rpc, "getEpochSchedule")
    assert schedule == {
        "slotsPerEpoch": 432_000,
        "leaderScheduleSlotOffset": 432_000,
        "warmup": True,
        "firstNormalEpoch": 14,
        "firstNormalSlot": 524_256,
    }
    slot = ledger.block
    info = await result(rpc, "getEpochInfo", {"commitment": "finalized"})
    assert info == {
        "absoluteSlot": slot,
        "blockHeight": slot,
        "epoch": 0,
        "slotIndex": slot,
        "slotsInEpoch": 32,
    }
    await ledger.advance()
    assert (await result(rpc, "getEpochInfo"))["absoluteSlot"] == slot + 1
    for method in ("getMaxRetransmitSlot", "getMaxShredInsertSlot"):
        assert await result(rpc, method) == slot + 1
    for method in ("getFirstAvailableBlock", "minimumLedgerSlot"):
        assert await result(rpc, method) == 0

    identity = (await result(rpc, "getIdentity"))["identity"]
    assert await result(rpc, "getSlotLeader") == identity
    assert await result(rpc, "getSlotLeaders", slot, 3) == [identity] * 3
    assert "max 5000" in await refused(rpc, "getSlotLeaders", 0, 5001)
    await refused(rpc, "getSlotLeaders", 10**9, 1)
    await refused(rpc, "getSlotLeaders", -1, 1)
    schedule_now = await result(rpc, "getLeaderSchedule")
    assert schedule_now == {identity: list(range(32))}
    assert await result(rpc, "getLeaderSchedule", None, {"identity": identity}) == schedule_now
    assert await result(rpc, "getLeaderSchedule", {"identity": str(Keypair().pubkey())}) == {}
    assert await result(rpc, "getLeaderSchedule", 10**9) is None
    await refused(rpc, "getLeaderSchedule", "soon")

    nodes = await result(rpc, "getClusterNodes")
    assert len(nodes) == 1 and nodes[0]["pubkey"] == identity
    assert nodes[0]["rpc"] is None and nodes[0]["version"] is None
    assert await result(rpc, "getVoteAccounts", {"commitment": "confirmed"}) == {
        "current": [],
        "delinquent": [],
    }
    await refused(rpc, "getVoteAccounts", {"votePubkey": "nope"})
    assert await result(rpc, "getRecentPerformanceSamples", 10) == []
    assert "max 720" in await refused(rpc, "getRecentPerformanceSamples", 721)
    assert await result(rpc, "getInflationRate") == {
        "total": 0.0,
        "validator": 0.0,
        "foundation": 0.0,
        "epoch": 0,
    }
    governor = await result(rpc, "getInflationGovernor")
    assert set(governor) == {"initial", "terminal", "taper", "foundation", "foundationTerm"}
    assert set(governor.values()) == {0.0}
    assert await result(rpc, "getBlockCommitment", slot) == {"commitment": None, "totalStake": 0}
    await refused(rpc, "getBlockCommitment")
    for method in ("getIdentity", "getGenesisHash", "getEpochSchedule", "getClusterNodes"):
        await refused(rpc, method, "extra")


async def test_genesis_hash_and_identity_are_stable(tmp_path: Path, rpc: LocalnetRpc) -> None:
    genesis = await result(rpc, "getGenesisHash")
    identity = (await result(rpc, "getIdentity"))["identity"]
    Hash.from_string(genesis)
    Pubkey.from_string(identity)
    for attempt in range(2):  # another ledger, then the same one reopened
        async with open_cluster_ledger(tmp_path / "other.db") as other:
            again = LocalnetRpc(other)
            assert await result(again, "getGenesisHash") == genesis, attempt
            assert (await result(again, "getIdentity"))["identity"] == identity


async def test_supply_stake_minimum_and_largest_accounts(
    rpc: LocalnetRpc, ledger: ClusterLedger
) -> None:
    before = await value(rpc, "getSupply")
    assert before["total"] == before["circulating"] + before["nonCirculating"]
    faucet = before["nonCirculatingAccounts"]
    assert len(faucet) == 1
    rich = Keypair()
    await ledger.airdrop(rich.pubkey(), 500 * SOL)
    after = await value(rpc, "getSupply", {"excludeNonCirculatingAccountsList": True})
    # The faucet's lamports moved, none were made; its transfer's fee was burned.
    assert after["total"] == before["total"] - 5_000
    assert after["circulating"] == before["circulating"] + 500 * SOL
    assert after["nonCirculatingAccounts"] == []
    await refused(rpc, "getSupply", {"excludeNonCirculatingAccountsList": "yes"})

    circulating = await value(rpc, "getLargestAccounts", {"filter": "circulating"})
    assert circulating[0] == {"lamports": 500 * SOL, "address": str(rich.pubkey())}
    assert len(circulating) <= 20
    assert [
        a["address"] for a in await value(rpc, "getLargestAccounts", {"filter": "nonCirculating"})
    ] == faucet
    everything = await value(rpc, "getLargestAccounts")
    assert everything[0]["address"] == faucet[0]
    await refused(rpc, "getLargestAccounts", {"filter": "rich"})

    # The stake program's own answer to GetMinimumDelegation (its return data).
    payer = Keypair()
    await ledger.airdrop(payer.pubkey(), SOL)
    ask = Instruction(STAKE_PROGRAM, struct.pack("<I", 13), [])
    tx = Transaction([payer], Message([ask], payer.pubkey()), await ledger.blockhash())
    err, logs = await ledger.dry_run(tx)
    assert err is None
    returned = [line.split()[-1] for line in logs if line.startswith("Program return:")]
    minimum = int.from_bytes(base64.b64decode(returned[0]), "little")
    assert await value(rpc, "getStakeMinimumDelegation") == minimum
