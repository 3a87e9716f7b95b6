"""The localnet's read-only JSON-RPC methods beyond the core ones: accounts one,
many or by program, tokens, fees, epochs, supply and the cluster's identity.

Answers have a cluster's (agave's) shapes, as @solana/web3.js 1.x and @solana/kit
parse them. Account data comes in the encodings a cluster serves: "binary" (a
bare base58 string: a cluster's default for getAccountInfo, getProgramAccounts
and getTokenAccountsBy*), "base58" (both for data up to 128 bytes), "base64"
(getMultipleAccounts' default), "base64+zstd" (a valid zstd frame of stored,
uncompressed blocks: any zstd decoder reads it, and no zstd library is needed
here) and "jsonParsed": SPL Token and Token-2022 mints, token accounts and
multisigs (Token-2022 extensions included), stake and nonce accounts, the clock,
rent, epoch schedule and last-restart-slot sysvars and upgradeable-loader
accounts are parsed; anything else falls back to base64, as on a cluster.

This ledger is one node, with no votes, no stake and no inflation. Its genesis
hash and its identity are derived from constants: stable across restarts and
the same on every mercato localnet (nothing is stored). getSupply and
getLargestAccounts count every account the ledger can list: those of the
loaders, the sysvars and of every program they hold; the faucet's account is
the non-circulating supply.

Methods: getAccountInfo, getMultipleAccounts, getProgramAccounts,
getTokenAccountBalance, getTokenAccountsByOwner, getTokenAccountsByDelegate,
getTokenSupply, getTokenLargestAccounts, getFeeForMessage,
getRecentPrioritizationFees, getEpochInfo, getEpochSchedule, getGenesisHash,
getFirstAvailableBlock, minimumLedgerSlot, getSupply, getLargestAccounts,
getIdentity, getStakeMinimumDelegation, getVoteAccounts, getClusterNodes,
getRecentPerformanceSamples, getInflationRate, getInflationGovernor,
getMaxRetransmitSlot, getMaxShredInsertSlot, getBlockCommitment,
getLeaderSchedule, getSlotLeader, getSlotLeaders.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import struct
from collections.abc import Awaitable, Callable, Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from solders.account import Account
from solders.hash import Hash
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message, MessageV0, from_bytes_versioned
from solders.pubkey import Pubkey

from ._programs import STAKE_PROGRAM

if TYPE_CHECKING:
    from ._localnet import LocalnetRpc

Method = Callable[[list[Any]], Awaitable[str]]
Json = dict[str, Any]

INVALID_PARAMS = -32602
SCAN_TOO_LARGE = -32012  # a cluster's code for a scan it will not finish
MIN_CONTEXT_SLOT_NOT_REACHED = -32016

MAX_MULTIPLE_ACCOUNTS = 100  # as on a cluster
MAX_FILTERS = 4  # as on a cluster
MAX_MEMCMP_BYTES = 128  # as on a cluster (175 base58 or 172 base64 characters)
MAX_BASE58_BYTES = 128  # as on a cluster
MAX_SCAN_ACCOUNTS = 10_000  # accounts in one answer: add filters beyond that
MAX_SCAN_BYTES = 32 * 1024 * 1024  # account data in one answer, before encoding
MAX_ADDRESSES = 128  # getRecentPrioritizationFees, as on a cluster
MAX_PERF_SAMPLES = 720  # as on a cluster
MAX_SLOT_LEADERS = 5_000  # as on a cluster
LARGEST = 20  # getLargestAccounts and getTokenLargestAccounts, as on a cluster
RECENT_SLOTS = 150  # slots getRecentPrioritizationFees answers for, as a cluster's cache
LAMPORTS_PER_SIGNATURE = 5_000
# The stake program in LiteSVM's default feature set answers GetMinimumDelegation with
# 1 SOL (the tests check it against the program itself).
STAKE_MINIMUM_DELEGATION = 1_000_000_000

COMMITMENTS = frozenset({"processed", "confirmed", "finalized"})
ENCODINGS = frozenset({"binary", "base58", "base64", "base64+zstd", "jsonParsed"})
GENESIS_HASH = Hash(hashlib.sha256(b"mercato localnet: genesis").digest())
IDENTITY = Keypair.from_seed(hashlib.sha256(b"mercato localnet: identity").digest()).pubkey()

SYSTEM_PROGRAM = Pubkey.from_string("11111111111111111111111111111111")
TOKEN_PROGRAM = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
TOKEN_2022_PROGRAM = Pubkey.from_string("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb")
TOKEN_PROGRAMS = {TOKEN_PROGRAM: "spl-token", TOKEN_2022_PROGRAM: "spl-token-2022"}
NATIVE_MINT = Pubkey.from_string("So11111111111111111111111111111111111111112")
NATIVE_DECIMALS = 9
NATIVE_LOADER = Pubkey.from_string("NativeLoader1111111111111111111111111111111")
SYSVAR_OWNER = Pubkey.from_string("Sysvar1111111111111111111111111111111111111")
UPGRADEABLE_LOADER = Pubkey.from_string("BPFLoaderUpgradeab1e11111111111111111111111")
LOADERS = (
    NATIVE_LOADER,
    UPGRADEABLE_LOADER,
    Pubkey.from_string("BPFLoader1111111111111111111111111111111111"),
    Pubkey.from_string("BPFLoader2111111111111111111111111111111111"),
    Pubkey.from_string("LoaderV411111111111111111111111111111111111"),
)
COMPUTE_BUDGET = Pubkey.from_string("ComputeBudget111111111111111111111111111111")
PRECOMPILES = frozenset(
    Pubkey.from_string(k)
    for k in (
        "KeccakSecp256k11111111111111111111111111111",
        "Ed25519SigVerify111111111111111111111111111",
        "Secp256r1SigVerify1111111111111111111111111",
    )
)
CLOCK = Pubkey.from_string("SysvarC1ock11111111111111111111111111111111")
RENT = Pubkey.from_string("SysvarRent111111111111111111111111111111111")
EPOCH_SCHEDULE = Pubkey.from_string("SysvarEpochSchedu1e111111111111111111111111")
LAST_RESTART_SLOT = Pubkey.from_string("SysvarLastRestartS1ot1111111111111111111111")

# Compute units a transaction asks for when it does not say (agave's defaults).
BUILTIN_UNITS = 3_000
PROGRAM_UNITS = 200_000
MAX_UNITS = 1_400_000

TOKEN_ACCOUNT_LEN = 165
MINT_LEN = 82
MULTISIG_LEN = 355
ACCOUNT_TYPE_MINT = 1
ACCOUNT_TYPE_ACCOUNT = 2
TOKEN_STATES = {1: "initialized", 2: "frozen"}

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_DIGITS = {c: i for i, c in enumerate(_B58)}


def read_methods(rpc: LocalnetRpc) -> dict[str, Method]:
    """The methods this module adds to ``rpc``, by JSON-RPC name."""
    reads = _Reads(rpc)
    return {
        "getAccountInfo": reads.account_info,
        "getMultipleAccounts": reads.multiple_accounts,
        "getProgramAccounts": reads.program_accounts,
        "getTokenAccountBalance": reads.token_account_balance,
        "getTokenAccountsByOwner": reads.token_accounts_by_owner,
        "getTokenAccountsByDelegate": reads.token_accounts_by_delegate,
        "getTokenSupply": reads.token_supply,
        "getTokenLargestAccounts": reads.token_largest_accounts,
        "getFeeForMessage": reads.fee_for_message,
        "getRecentPrioritizationFees": reads.recent_prioritization_fees,
        "getEpochInfo": reads.epoch_info,
        "getEpochSchedule": reads.epoch_schedule,
        "getGenesisHash": reads.genesis_hash,
        "getFirstAvailableBlock": reads.zero,
        "minimumLedgerSlot": reads.zero,
        "getSupply": reads.supply,
        "getLargestAccounts": reads.largest_accounts,
        "getIdentity": reads.identity,
        "getStakeMinimumDelegation": reads.stake_minimum_delegation,
        "getVoteAccounts": reads.vote_accounts,
        "getClusterNodes": reads.cluster_nodes,
        "getRecentPerformanceSamples": reads.performance_samples,
        "getInflationRate": reads.inflation_rate,
        "getInflationGovernor": reads.inflation_governor,
        "getMaxRetransmitSlot": reads.current_slot,
        "getMaxShredInsertSlot": reads.current_slot,
        "getBlockCommitment": reads.block_commitment,
        "getLeaderSchedule": reads.leader_schedule,
        "getSlotLeader": reads.slot_leader,
        "getSlotLeaders": reads.slot_leaders,
    }


def _refused(message: str, code: int = INVALID_PARAMS) -> Exception:
    # Imported here: _localnet imports this module before it defines _Refused.
    from ._localnet import _Refused

    return _Refused(code, message)


def _result(value: Any) -> str:
    return json.dumps({"jsonrpc": "2.0", "result": value, "id": 0})


class _Reads:
    """The methods, bound to one `LocalnetRpc` (see the module docstring)."""

    def __init__(self, rpc: LocalnetRpc) -> None:
        self.rpc = rpc

    @property
    def _svm(self) -> LiteSVM:
        return self.rpc.ledger._svm

    @property
    def _slot(self) -> int:
        return self.rpc.ledger.block

    def _with_context(self, value: Any) -> str:
        context = json.loads(self.rpc._context().to_json())
        return _result({"context": context, "value": value})

    def _config(self, params: list[Any], index: int, most: int | None = None) -> Json:
        """The config object at ``index`` ({} if absent), its commitment and
        minContextSlot checked; at most ``most`` parameters (default index + 1)."""
        _arity(params, index + 1 if most is None else most)
        if len(params) <= index or params[index] is None:
            return {}
        config = params[index]
        if not isinstance(config, dict):
            raise _refused(f"parameter {index} (config) must be an object")
        commitment = config.get("commitment")
        if commitment is not None and commitment not in COMMITMENTS:
            raise _refused("commitment must be processed, confirmed or finalized")
        min_slot = config.get("minContextSlot")
        if min_slot is not None and _uint(min_slot, "minContextSlot") > self._slot:
            raise _refused(
                "Minimum context slot has not been reached", MIN_CONTEXT_SLOT_NOT_REACHED
            )
        return config

    def _account(self, pubkey: Pubkey) -> Account | None:
        account = self.rpc.ledger.raw_account(pubkey)
        return account if account is not None and account.lamports > 0 else None

    def _owned_by(self, owner: Pubkey) -> list[tuple[Pubkey, Account]]:
        found = [(k, a) for k, a in self._svm.get_program_accounts(owner) if a.lamports > 0]
        return sorted(found, key=lambda item: bytes(item[0]))

    # Accounts.

    async def account_info(self, params: list[Any]) -> str:
        """getAccountInfo: one account (null if it has no lamports)."""
        pubkey = _pubkey_param(params, 0, "pubkey")
        config = self._config(params, 1)
        encoding = _encoding(config, "binary")
        data_slice = _data_slice(config)
        async with self.rpc._lock:
            account = self._account(pubkey)
            value = None if account is None else self._encode(pubkey, account, encoding, data_slice)
        return self._with_context(value)

    async def multiple_accounts(self, params: list[Any]) -> str:
        """getMultipleAccounts: up to 100 accounts, in order (null where none)."""
        raw = _param(params, 0, list, "pubkeys")
        if len(raw) > MAX_MULTIPLE_ACCOUNTS:
            raise _refused(f"Too many inputs provided; max {MAX_MULTIPLE_ACCOUNTS}")
        pubkeys = [_pubkey(text) for text in raw]
        config = self._config(params, 1)
        encoding = _encoding(config, "base64")
        data_slice = _data_slice(config)
        async with self.rpc._lock:
            values = []
            for pubkey in pubkeys:
                account = self._account(pubkey)
                values.append(
                    None if account is None else self._encode(pubkey, account, encoding, data_slice)
                )
        return self._with_context(values)

    async def program_accounts(self, params: list[Any]) -> str:
        """getProgramAccounts: the accounts a program owns, filtered (dataSize,
        memcmp, tokenAccountState), bounded in number and size."""
        program = _pubkey_param(params, 0, "program id")
        config = self._config(params, 1)
        encoding = _encoding(config, "binary")
        data_slice = _data_slice(config)
        if encoding == "jsonParsed" and data_slice is not None:
            raise _refused(
                "Sliced account data can only be encoded using binary (base 58) or base64 encoding."
            )
        raw_filters = config.get("filters") or []
        if not isinstance(raw_filters, list):
            raise _refused("filters must be an array")
        if len(raw_filters) > MAX_FILTERS:
            raise _refused(f"Too many filters provided; max {MAX_FILTERS}")
        filters = [_filter(f) for f in raw_filters]
        with_context = config.get("withContext", False)
        if not isinstance(with_context, bool):
            raise _refused("withContext must be a boolean")
        async with self.rpc._lock:
            found = self._scan(program, filters, data_slice)
            if encoding == "jsonParsed" and program in TOKEN_PROGRAMS:
                value = self._parsed_token_accounts(found)
            else:
                value = [
                    {"pubkey": str(k), "account": self._encode(k, a, encoding, data_slice)}
                    for k, a in found
                ]
        return self._with_context(value) if with_context else _result(value)

    def _scan(
        self,
        program: Pubkey,
        filters: list[Callable[[bytes], bool]],
        data_slice: tuple[int, int] | None = None,
    ) -> list[tuple[Pubkey, Account]]:
        found, size = [], 0
        for pubkey, account in self._owned_by(program):
            data = bytes(account.data)
            if not all(keep(data) for keep in filters):
                continue
            found.append((pubkey, account))
            size += len(_slice(data, data_slice))
            if len(found) > MAX_SCAN_ACCOUNTS or size > MAX_SCAN_BYTES:
                raise _refused(
                    f"the answer would hold more than {MAX_SCAN_ACCOUNTS} accounts or"
                    f" {MAX_SCAN_BYTES >> 20} MiB of data: narrow it with filters or a dataSlice",
                    SCAN_TOO_LARGE,
                )
        return found

    def _encode(
        self,
        pubkey: Pubkey,
        account: Account,
        encoding: str,
        data_slice: tuple[int, int] | None,
        decimals: int | None = None,
    ) -> Json:
        """An account as a cluster encodes it (UiAccount)."""
        data = bytes(account.data)
        ui_data: Any
        if encoding == "jsonParsed":
            parsed = self._parse(pubkey, account, decimals)
            ui_data = parsed if parsed is not None else [_b64(data), "base64"]
        else:
            part = _slice(data, data_slice)
            if encoding in ("binary", "base58") and len(part) > MAX_BASE58_BYTES:
                raise _refused(
                    f"Encoded binary (base 58) data should be less than {MAX_BASE58_BYTES}"
                    " bytes, please use Base64 encoding."
                )
            if encoding == "binary":
                ui_data = b58encode(part)
            elif encoding == "base58":
                ui_data = [b58encode(part), "base58"]
            elif encoding == "base64":
                ui_data = [_b64(part), "base64"]
            else:
                ui_data = [_b64(zstd_stored(part)), "base64+zstd"]
        return {
            "lamports": account.lamports,
            "data": ui_data,
            "owner": str(account.owner),
            "executable": account.executable,
            "rentEpoch": account.rent_epoch,
            "space": len(data),
        }

    def _parse(self, pubkey: Pubkey, account: Account, decimals: int | None) -> Json | None:
        """jsonParsed data, or None where a cluster falls back to base64."""
        data, owner = bytes(account.data), account.owner
        parsed: Json | None = None
        if owner in TOKEN_PROGRAMS:
            if decimals is None:
                decimals = self._token_account_decimals(data)
            parsed = parse_token(data, decimals)
            program = TOKEN_PROGRAMS[owner]
        elif owner == SYSTEM_PROGRAM:
            parsed, program = parse_nonce(data), "nonce"
        elif owner == STAKE_PROGRAM:
            parsed, program = parse_stake(data), "stake"
        elif owner == SYSVAR_OWNER:
            parsed, program = parse_sysvar(pubkey, data), "sysvar"
        elif owner == UPGRADEABLE_LOADER:
            parsed, program = parse_upgradeable_loader(data), "bpfUpgradeableLoader"
        if parsed is None:
            return None
        return {"program": program, "parsed": parsed, "space": len(data)}

    # Tokens.

    def _mint_decimals(self, mint: Pubkey) -> int | None:
        """A mint's decimals (None: no such mint); the native mint has 9, as on a cluster."""
        if mint == NATIVE_MINT:
            return NATIVE_DECIMALS
        account = self._account(mint)
        base = None if account is None else unpack_mint(bytes(account.data))
        return None if base is None else int(base["decimals"])

    def _token_account_decimals(self, data: bytes) -> int | None:
        if not valid_token_account(data):
            return None
        return self._mint_decimals(Pubkey(data[:32]))

    def _parsed_token_accounts(self, found: Iterable[tuple[Pubkey, Account]]) -> list[Json]:
        """Token accounts, parsed; those that do not parse are left out, as on a cluster."""
        decimals: dict[bytes, int | None] = {}
        value = []
        for pubkey, account in found:
            data = bytes(account.data)
            known = None
            if valid_token_account(data):
                if data[:32] not in decimals:
                    decimals[data[:32]] = self._mint_decimals(Pubkey(data[:32]))
                known = decimals[data[:32]]
            encoded = self._encode(pubkey, account, "jsonParsed", None, known)
            if isinstance(encoded["data"], dict):
                value.append({"pubkey": str(pubkey), "account": encoded})
        return value

    def _mint(self, mint: Pubkey) -> tuple[Pubkey, int]:
        """A mint's token program and decimals, or the cluster's refusal."""
        if mint == NATIVE_MINT:
            return TOKEN_PROGRAM, NATIVE_DECIMALS
        account = self._account(mint)
        if account is None:
            raise _refused("Invalid param: could not find mint")
        base = unpack_mint(bytes(account.data))
        if base is None:
            raise _refused("Invalid param: Token mint could not be unpacked")
        return account.owner, int(base["decimals"])

    async def token_account_balance(self, params: list[Any]) -> str:
        """getTokenAccountBalance: a token account's amount (UiTokenAmount)."""
        pubkey = _pubkey_param(params, 0, "token account")
        self._config(params, 1)
        async with self.rpc._lock:
            account = self._account(pubkey)
            if account is None:
                raise _refused("Invalid param: could not find account")
            data = bytes(account.data)
            if account.owner not in TOKEN_PROGRAMS or not valid_token_account(data):
                raise _refused("Invalid param: not a Token account")
            _, decimals = self._mint(Pubkey(data[:32]))
        return self._with_context(token_amount(_u64(data, 64), decimals))

    async def token_supply(self, params: list[Any]) -> str:
        """getTokenSupply: a mint's supply (UiTokenAmount)."""
        pubkey = _pubkey_param(params, 0, "mint")
        self._config(params, 1)
        async with self.rpc._lock:
            account = self._account(pubkey)
            if account is None:
                raise _refused("Invalid param: could not find account")
            if account.owner not in TOKEN_PROGRAMS:
                raise _refused("Invalid param: not a Token mint")
            base = unpack_mint(bytes(account.data))
            if base is None:
                raise _refused("Invalid param: mint could not be unpacked")
        return self._with_context(token_amount(int(base["supply"]), int(base["decimals"])))

    async def token_largest_accounts(self, params: list[Any]) -> str:
        """getTokenLargestAccounts: a mint's 20 largest token accounts."""
        mint = _pubkey_param(params, 0, "mint")
        self._config(params, 1)
        async with self.rpc._lock:
            program, decimals = self._mint(mint)
            if program not in TOKEN_PROGRAMS:
                raise _refused("Invalid param: not a Token mint")
            found = self._scan(program, [valid_token_account, _memcmp(0, bytes(mint))])
        amounts = sorted(((_u64(bytes(a.data), 64), bytes(k)) for k, a in found), reverse=True)[
            :LARGEST
        ]
        value = [
            {"address": str(Pubkey(key)), **token_amount(amount, decimals)}
            for amount, key in amounts
        ]
        return self._with_context(value)

    async def token_accounts_by_owner(self, params: list[Any]) -> str:
        """getTokenAccountsByOwner: filtered by mint or token program."""
        owner = _pubkey_param(params, 0, "owner")
        return await self._token_accounts(params, [_memcmp(32, bytes(owner))])

    async def token_accounts_by_delegate(self, params: list[Any]) -> str:
        """getTokenAccountsByDelegate: filtered by mint or token program."""
        delegate = _pubkey_param(params, 0, "delegate")
        return await self._token_accounts(params, [_memcmp(72, b"\1\0\0\0" + bytes(delegate))])

    async def _token_accounts(
        self, params: list[Any], filters: list[Callable[[bytes], bool]]
    ) -> str:
        wanted = _param(params, 1, dict, "filter")
        if set(wanted) not in ({"mint"}, {"programId"}):
            raise _refused("the filter must be either {mint} or {programId}")
        config = self._config(params, 2)
        encoding = _encoding(config, "binary")
        data_slice = _data_slice(config)
        async with self.rpc._lock:
            if "mint" in wanted:
                mint = _pubkey(wanted["mint"])
                program, _ = self._mint(mint)
                if program not in TOKEN_PROGRAMS:
                    raise _refused("Invalid param: not a Token mint")
                filters = [*filters, _memcmp(0, bytes(mint))]
            else:
                program = _pubkey(wanted["programId"])
                if program not in TOKEN_PROGRAMS:
                    raise _refused("Invalid param: unrecognized Token program id")
            found = self._scan(program, [valid_token_account, *filters], data_slice)
            if encoding == "jsonParsed":
                value = self._parsed_token_accounts(found)
            else:
                value = [
                    {"pubkey": str(k), "account": self._encode(k, a, encoding, data_slice)}
                    for k, a in found
                ]
        return self._with_context(value)

    # Fees.

    async def fee_for_message(self, params: list[Any]) -> str:
        """getFeeForMessage: 5000 lamports a signature (precompiles' included) and
        the priority fee, as the runtime charges. Always answered: the
        message's blockhash is not checked."""
        encoded = _param(params, 0, str, "message")
        self._config(params, 1)
        try:
            message = from_bytes_versioned(base64.b64decode(encoded, validate=True))
        except binascii.Error as exc:
            raise _refused(f"invalid base64 encoding: {exc}") from exc
        except Exception as exc:  # solders' errors have no common base to name
            raise _refused("failed to deserialize the message (legacy or v0)") from exc
        if not isinstance(message, Message | MessageV0):
            raise _refused("only legacy and v0 messages are served")
        async with self.rpc._lock:
            fee = self._fee(message)
        return self._with_context(fee)

    def _fee(self, message: Message | MessageV0) -> int:
        keys = list(message.account_keys)
        signatures = message.header.num_required_signatures
        units, price, limit, seen = 0, 0, None, set()
        valid_budget = True
        for ix in message.instructions:
            if ix.program_id_index >= len(keys):
                raise _refused("invalid transaction message: a program is not a static key")
            program, data = keys[ix.program_id_index], bytes(ix.data)
            if program in PRECOMPILES and data:
                signatures += data[0]
            if program == COMPUTE_BUDGET:
                parsed = _compute_budget(data)
                if parsed is None or parsed[0] in seen:
                    valid_budget = False
                else:
                    seen.add(parsed[0])
                    if parsed[0] == 2:
                        limit = parsed[1]
                    elif parsed[0] == 3:
                        price = parsed[1]
            units += BUILTIN_UNITS if self._builtin(program) else PROGRAM_UNITS
        if not valid_budget:  # the runtime would refuse it: no priority fee, as agave
            price = 0
        units = min(MAX_UNITS, units if limit is None else limit)
        return LAMPORTS_PER_SIGNATURE * signatures + (price * units + 999_999) // 1_000_000

    def _builtin(self, program: Pubkey) -> bool:
        account = self._svm.get_account(program)
        return account is not None and account.owner == NATIVE_LOADER

    async def recent_prioritization_fees(self, params: list[Any]) -> str:
        """getRecentPrioritizationFees: 0 for each recent slot (no contention here)."""
        _arity(params, 1)
        if params and params[0] is not None:
            addresses = _param(params, 0, list, "addresses")
            if len(addresses) > MAX_ADDRESSES:
                raise _refused(f"Too many inputs provided; max {MAX_ADDRESSES}")
            for text in addresses:
                _pubkey(text)
        slot = self._slot
        first = max(0, slot - RECENT_SLOTS + 1)
        return _result([{"slot": s, "prioritizationFee": 0} for s in range(first, slot + 1)])

    # Epochs, slots, the cluster.

    async def epoch_info(self, params: list[Any]) -> str:
        """getEpochInfo (no transactionCount: this ledger does not count them)."""
        self._config(params, 0)
        slot = self._slot
        schedule = self._svm.get_epoch_schedule()
        epoch, index = schedule.get_epoch_and_slot_index(slot)
        return _result(
            {
                "absoluteSlot": slot,
                "blockHeight": slot,
                "epoch": epoch,
                "slotIndex": index,
                "slotsInEpoch": schedule.get_slots_in_epoch(epoch),
            }
        )

    async def epoch_schedule(self, params: list[Any]) -> str:
        """getEpochSchedule: the ledger's (LiteSVM's, with warmup epochs)."""
        _arity(params, 0)
        schedule = self._svm.get_epoch_schedule()
        return _result(
            {
                "slotsPerEpoch": schedule.slots_per_epoch,
                "leaderScheduleSlotOffset": schedule.leader_schedule_slot_offset,
                "warmup": schedule.warmup,
                "firstNormalEpoch": schedule.first_normal_epoch,
                "firstNormalSlot": schedule.first_normal_slot,
            }
        )

    async def genesis_hash(self, params: list[Any]) -> str:
        """getGenesisHash: a constant's hash (see the module docstring)."""
        _arity(params, 0)
        return _result(str(GENESIS_HASH))

    async def zero(self, params: list[Any]) -> str:
        """getFirstAvailableBlock and minimumLedgerSlot: the ledger starts at 0."""
        _arity(params, 0)
        return _result(0)

    async def current_slot(self, params: list[Any]) -> str:
        """getMaxRetransmitSlot and getMaxShredInsertSlot: the current slot."""
        _arity(params, 0)
        return _result(self._slot)

    async def identity(self, params: list[Any]) -> str:
        """getIdentity: this node's (derived from a constant)."""
        _arity(params, 0)
        return _result({"identity": str(IDENTITY)})

    async def slot_leader(self, params: list[Any]) -> str:
        """getSlotLeader: this node."""
        self._config(params, 0)
        return _result(str(IDENTITY))

    async def slot_leaders(self, params: list[Any]) -> str:
        """getSlotLeaders: this node, for each slot asked."""
        _arity(params, 2)
        start = _uint(_param(params, 0, int, "start slot"), "start slot")
        limit = _uint(_param(params, 1, int, "limit"), "limit")
        if limit > MAX_SLOT_LEADERS:
            raise _refused(f"Invalid limit; max {MAX_SLOT_LEADERS}")
        schedule = self._svm.get_epoch_schedule()
        known = schedule.get_leader_schedule_epoch(self._slot)
        epoch = schedule.get_epoch(start + max(limit, 1) - 1)
        if epoch > known:
            raise _refused(f"Invalid slot range: leader schedule for epoch {epoch} is unavailable")
        return _result([str(IDENTITY)] * limit)

    async def leader_schedule(self, params: list[Any]) -> str:
        """getLeaderSchedule: this node leads every slot of the epoch asked."""
        _arity(params, 2)
        slot, config = self._slot, {}
        first = params[0] if params else None
        if isinstance(first, dict):
            config = self._config(params, 0, 2)
        elif first is not None:
            slot = _uint(first, "slot")
        if len(params) > 1:
            config = self._config(params, 1)
        identity = config.get("identity")
        if identity is not None:
            _pubkey(identity)
        schedule = self._svm.get_epoch_schedule()
        epoch = schedule.get_epoch(slot)
        if epoch > schedule.get_leader_schedule_epoch(self._slot):
            return _result(None)
        if identity is not None and identity != str(IDENTITY):
            return _result({})
        return _result({str(IDENTITY): list(range(schedule.get_slots_in_epoch(epoch)))})

    async def vote_accounts(self, params: list[Any]) -> str:
        """getVoteAccounts: none, current or delinquent (this node does not vote)."""
        config = self._config(params, 0)
        if config.get("votePubkey") is not None:
            _pubkey(config["votePubkey"])
        return _result({"current": [], "delinquent": []})

    async def cluster_nodes(self, params: list[Any]) -> str:
        """getClusterNodes: this node alone, with no gossip, TPU or known RPC address."""
        _arity(params, 0)
        node = {
            "pubkey": str(IDENTITY),
            "gossip": None,
            "tvu": None,
            "tpu": None,
            "tpuQuic": None,
            "tpuForwards": None,
            "tpuForwardsQuic": None,
            "tpuVote": None,
            "serveRepair": None,
            "rpc": None,
            "pubsub": None,
            "version": None,
            "featureSet": None,
            "shredVersion": None,
        }
        return _result([node])

    async def performance_samples(self, params: list[Any]) -> str:
        """getRecentPerformanceSamples: none are taken (as a just-started validator)."""
        _arity(params, 1)
        if params and params[0] is not None:
            limit = _uint(_param(params, 0, int, "limit"), "limit")
            if limit > MAX_PERF_SAMPLES:
                raise _refused(f"Invalid limit; max {MAX_PERF_SAMPLES}")
        return _result([])

    async def inflation_governor(self, params: list[Any]) -> str:
        """getInflationGovernor: inflation is disabled here (all zero)."""
        self._config(params, 0)
        return _result(
            {
                "initial": 0.0,
                "terminal": 0.0,
                "taper": 0.0,
                "foundation": 0.0,
                "foundationTerm": 0.0,
            }
        )

    async def inflation_rate(self, params: list[Any]) -> str:
        """getInflationRate: zero, for the current epoch."""
        _arity(params, 0)
        epoch = self._svm.get_epoch_schedule().get_epoch(self._slot)
        return _result({"total": 0.0, "validator": 0.0, "foundation": 0.0, "epoch": epoch})

    async def stake_minimum_delegation(self, params: list[Any]) -> str:
        """getStakeMinimumDelegation: what the stake program enforces."""
        self._config(params, 0)
        return self._with_context(STAKE_MINIMUM_DELEGATION)

    async def block_commitment(self, params: list[Any]) -> str:
        """getBlockCommitment: every block is final at once, with no stake voting."""
        _arity(params, 1)
        _uint(_param(params, 0, int, "slot"), "slot")
        return _result({"commitment": None, "totalStake": 0})

    # Supply.

    def _every_account(self) -> list[tuple[Pubkey, Account]]:
        """Every account the ledger can list: owned by a loader, the sysvar id, or
        a program a loader holds."""
        owners = [*LOADERS, SYSVAR_OWNER]
        seen = set(owners)
        found = []
        for owner in owners:  # grows while it is walked
            for pubkey, account in self._owned_by(owner):
                found.append((pubkey, account))
                if account.executable and pubkey not in seen:
                    seen.add(pubkey)
                    owners.append(pubkey)
        return found

    async def supply(self, params: list[Any]) -> str:
        """getSupply: the lamports of every account listed (see _every_account);
        the faucet's are the non-circulating supply."""
        config = self._config(params, 0)
        exclude = config.get("excludeNonCirculatingAccountsList", False)
        if not isinstance(exclude, bool):
            raise _refused("excludeNonCirculatingAccountsList must be a boolean")
        async with self.rpc._lock:
            total = sum(a.lamports for _, a in self._every_account())
            faucet = self._svm.airdrop_pubkey()
            reserve = self._svm.get_balance(faucet) or 0
        return self._with_context(
            {
                "total": total,
                "circulating": total - reserve,
                "nonCirculating": reserve,
                "nonCirculatingAccounts": [] if exclude or not reserve else [str(faucet)],
            }
        )

    async def largest_accounts(self, params: list[Any]) -> str:
        """getLargestAccounts: the 20 largest listed accounts (filter circulating:
        all but the faucet's; nonCirculating: the faucet's)."""
        config = self._config(params, 0)
        wanted = config.get("filter")
        if wanted not in (None, "circulating", "nonCirculating"):
            raise _refused("filter must be circulating or nonCirculating")
        async with self.rpc._lock:
            faucet = self._svm.airdrop_pubkey()
            balances = [
                (a.lamports, bytes(k))
                for k, a in self._every_account()
                if wanted is None or (k == faucet) == (wanted == "nonCirculating")
            ]
        largest = sorted(balances, reverse=True)[:LARGEST]
        value = [{"lamports": lamports, "address": str(Pubkey(k))} for lamports, k in largest]
        return self._with_context(value)


# Parameters.


def _arity(params: list[Any], most: int) -> None:
    if len(params) > most:
        raise _refused(f"at most {most} parameters")


def _param(params: list[Any], index: int, kind: type, name: str) -> Any:
    if len(params) <= index or not isinstance(params[index], kind):
        raise _refused(f"parameter {index} ({name}) must be a {kind.__name__}")
    return params[index]


def _pubkey(text: Any) -> Pubkey:
    if not isinstance(text, str):
        raise _refused("public keys are base58 strings")
    try:
        return Pubkey.from_string(text)
    except ValueError as exc:
        raise _refused(f"Invalid param: not a base58 public key: {text[:64]!r}") from exc


def _pubkey_param(params: list[Any], index: int, name: str) -> Pubkey:
    return _pubkey(_param(params, index, str, name))


def _uint(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**64:
        raise _refused(f"{name} must be an integer between 0 and 2^64 - 1")
    return value


def _encoding(config: Json, default: str) -> str:
    encoding = config.get("encoding")
    if encoding is None:
        return default
    if encoding not in ENCODINGS:
        raise _refused("encoding must be one of binary, base58, base64, base64+zstd or jsonParsed")
    return str(encoding)


def _data_slice(config: Json) -> tuple[int, int] | None:
    raw = config.get("dataSlice")
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) != {"offset", "length"}:
        raise _refused("dataSlice must be {offset, length}")
    return _uint(raw["offset"], "dataSlice.offset"), _uint(raw["length"], "dataSlice.length")


def _slice(data: bytes, data_slice: tuple[int, int] | None) -> bytes:
    if data_slice is None:
        return data
    offset, length = data_slice
    return data[offset : offset + length]


def _filter(raw: Any) -> Callable[[bytes], bool]:
    """One getProgramAccounts filter, checked as a cluster checks it."""
    if raw == "tokenAccountState":
        return valid_token_account
    if not isinstance(raw, dict) or len(raw) != 1:
        raise _refused('a filter is {dataSize}, {memcmp} or "tokenAccountState"')
    if "dataSize" in raw:
        size = _uint(raw["dataSize"], "dataSize")
        return lambda data: len(data) == size
    compare = raw.get("memcmp")
    if not isinstance(compare, dict):
        raise _refused('a filter is {dataSize}, {memcmp} or "tokenAccountState"')
    offset = _uint(compare.get("offset"), "memcmp.offset")
    text, encoding = compare.get("bytes"), compare.get("encoding", "base58")
    if not isinstance(text, str):
        raise _refused("memcmp.bytes must be a string")
    try:
        if encoding == "base58":
            if len(text) > 175:
                raise ValueError("too long")
            wanted = b58decode(text)
        elif encoding == "base64":
            if len(text) > 172:
                raise ValueError("too long")
            wanted = base64.b64decode(text, validate=True)
        else:
            raise _refused("memcmp.encoding must be base58 or base64")
    except (ValueError, binascii.Error) as exc:
        raise _refused(f"Invalid param: memcmp.bytes is not {encoding}: {exc}") from exc
    if len(wanted) > MAX_MEMCMP_BYTES:
        raise _refused(f"Invalid param: memcmp.bytes is over {MAX_MEMCMP_BYTES} bytes")
    return _memcmp(offset, wanted)


def _memcmp(offset: int, wanted: bytes) -> Callable[[bytes], bool]:
    return lambda data: (
        data[offset : offset + len(wanted)] == wanted and (offset + len(wanted) <= len(data))
    )


def _compute_budget(data: bytes) -> tuple[int, int] | None:
    """A compute-budget instruction as (tag, value); None if the runtime refuses it."""
    sizes = {1: 4, 2: 4, 3: 8, 4: 4}  # heap frame, unit limit, unit price, data size
    if not data or data[0] not in sizes or len(data) != 1 + sizes[data[0]]:
        return None
    value = int.from_bytes(data[1:], "little")
    if data[0] == 1 and not (value % 1024 == 0 and 32 * 1024 <= value <= 256 * 1024):
        return None
    return data[0], value


# Encodings.


def b58encode(data: bytes) -> str:
    """Base58 (bitcoin alphabet), as Solana writes keys and short data."""
    zeros = len(data) - len(data.lstrip(b"\0"))
    number, digits = int.from_bytes(data, "big"), []
    while number:
        number, digit = divmod(number, 58)
        digits.append(_B58[digit])
    return "1" * zeros + "".join(reversed(digits))


def b58decode(text: str) -> bytes:
    """The bytes of a base58 string; ValueError if it is not one."""
    number = 0
    for char in text:
        if char not in _B58_DIGITS:
            raise ValueError(f"{char!r} is not a base58 digit")
        number = number * 58 + _B58_DIGITS[char]
    zeros = len(text) - len(text.lstrip("1"))
    return b"\0" * zeros + (number.to_bytes((number.bit_length() + 7) // 8, "big"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def zstd_stored(data: bytes) -> bytes:
    """A zstd frame (RFC 8878) holding ``data`` in raw blocks: valid zstd that any
    decoder reads, though not compressed."""
    size = len(data)
    if size < 256:
        flag, content_size = 0, bytes([size])
    elif size < 65536 + 256:
        flag, content_size = 1, struct.pack("<H", size - 256)
    elif size < 2**32:
        flag, content_size = 2, struct.pack("<I", size)
    else:
        flag, content_size = 3, struct.pack("<Q", size)
    # Magic, then a single-segment frame header: no window descriptor, the size given.
    frame = bytearray(b"\x28\xb5\x2f\xfd")
    frame.append(flag << 6 | 1 << 5)
    frame += content_size
    block, offset = 128 * 1024, 0
    while True:
        chunk = data[offset : offset + block]
        offset += len(chunk)
        last = offset >= size
        frame += (int(last) | len(chunk) << 3).to_bytes(3, "little")  # raw block type 0
        frame += chunk
        if last:
            return bytes(frame)


def _rust_float(value: float) -> str:
    """``value`` as Rust's f64 Display writes it (shortest, never an exponent)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = format(Decimal(repr(value)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


# Account parsers: each returns the "parsed" object, or None (not parsable).


def _u64(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 8], "little")


def _key(data: bytes, offset: int) -> str:
    return str(Pubkey(data[offset : offset + 32]))


def _optional_key(raw: bytes) -> str | None:
    """An OptionalNonZeroPubkey: all zeros is None."""
    return None if raw == bytes(32) else str(Pubkey(raw))


def _coption_key(data: bytes, offset: int) -> str | None:
    tag = data[offset : offset + 4]
    if tag not in (b"\0\0\0\0", b"\1\0\0\0"):
        raise ValueError("bad COption tag")
    return _key(data, offset + 4) if tag[0] else None


def _coption_u64(data: bytes, offset: int) -> int | None:
    tag = data[offset : offset + 4]
    if tag not in (b"\0\0\0\0", b"\1\0\0\0"):
        raise ValueError("bad COption tag")
    return _u64(data, offset + 4) if tag[0] else None


def token_amount(amount: int, decimals: int) -> Json:
    """A UiTokenAmount, as agave writes it (without interest or scaling)."""
    if decimals:
        digits = str(amount).rjust(decimals + 1, "0")
        text = f"{digits[:-decimals]}.{digits[-decimals:]}".rstrip("0").rstrip(".")
    else:
        text = str(amount)
    divisor = 10**decimals
    ui_amount = float(amount) / float(divisor) if divisor < 2**64 else None
    return {
        "uiAmount": ui_amount,
        "decimals": decimals,
        "amount": str(amount),
        "uiAmountString": text,
    }


def _tlv(data: bytes, base_len: int, account_type: int) -> bytes | None:
    """The extension (TLV) bytes of a Token-2022 state of ``base_len`` bytes, b""
    without extensions, None if ``data`` is not such a state."""
    if len(data) == MULTISIG_LEN or len(data) < base_len:
        return None
    if len(data) == base_len:
        return b""
    if len(data) < TOKEN_ACCOUNT_LEN + 1 or any(data[base_len:TOKEN_ACCOUNT_LEN]):
        return None
    return data[TOKEN_ACCOUNT_LEN + 1 :] if data[TOKEN_ACCOUNT_LEN] == account_type else None


def valid_token_account(data: bytes) -> bool:
    """Whether ``data`` is an initialized token account (a cluster's tokenAccountState)."""
    return _tlv(data, TOKEN_ACCOUNT_LEN, ACCOUNT_TYPE_ACCOUNT) is not None and data[108] in (1, 2)


def unpack_mint(data: bytes) -> Json | None:
    """An initialized mint's base fields (Token or Token-2022), None if ``data`` is not one."""
    if _tlv(data, MINT_LEN, ACCOUNT_TYPE_MINT) is None or data[45] != 1:
        return None
    try:
        mint_authority, freeze_authority = _coption_key(data, 0), _coption_key(data, 46)
    except ValueError:
        return None
    return {
        "mintAuthority": mint_authority,
        "supply": str(_u64(data, 36)),
        "decimals": data[44],
        "isInitialized": True,
        "freezeAuthority": freeze_authority,
    }


def parse_token(data: bytes, decimals: int | None) -> Json | None:
    """A token account (needs its mint's ``decimals``), mint or multisig, parsed."""
    tlv = _tlv(data, TOKEN_ACCOUNT_LEN, ACCOUNT_TYPE_ACCOUNT)
    if tlv is not None and data[108] in (1, 2):
        try:
            delegate, native = _coption_key(data, 72), _coption_u64(data, 109)
            close_authority = _coption_key(data, 129)
        except ValueError:
            return None
        if decimals is None:
            return None
        info: Json = {
            "mint": _key(data, 0),
            "owner": _key(data, 32),
            "tokenAmount": token_amount(_u64(data, 64), decimals),
        }
        if delegate is not None:
            info["delegate"] = delegate
        info["state"] = TOKEN_STATES[data[108]]
        info["isNative"] = native is not None
        if native is not None:
            info["rentExemptReserve"] = token_amount(native, decimals)
        if delegate is not None:
            info["delegatedAmount"] = token_amount(_u64(data, 121), decimals)
        if close_authority is not None:
            info["closeAuthority"] = close_authority
        if extensions := parse_extensions(tlv):
            info["extensions"] = extensions
        return {"type": "account", "info": info}
    mint = unpack_mint(data)
    if mint is not None:
        tlv = _tlv(data, MINT_LEN, ACCOUNT_TYPE_MINT) or b""
        if extensions := parse_extensions(tlv):
            mint["extensions"] = extensions
        return {"type": "mint", "info": mint}
    if len(data) == MULTISIG_LEN and data[2] == 1:
        signers = [data[3 + 32 * i : 35 + 32 * i] for i in range(11)]
        return {
            "type": "multisig",
            "info": {
                "numRequiredSigners": data[0],
                "numValidSigners": data[1],
                "isInitialized": True,
                "signers": [str(Pubkey(s)) for s in signers if s != bytes(32)],
            },
        }
    return None


def parse_extensions(tlv: bytes) -> list[Json]:
    """Token-2022 extensions, as agave lists them; a malformed list is empty, and an
    extension this module does not know is "unparseableExtension"."""
    found: list[Json] = []
    start = 0
    while start < len(tlv):
        if len(tlv) < start + 4:
            return [] if len(tlv) < start + 2 or tlv[start : start + 2] != b"\0\0" else found
        kind = int.from_bytes(tlv[start : start + 2], "little")
        if kind == 0:  # Uninitialized: the rest is padding
            break
        end = start + 4 + int.from_bytes(tlv[start + 2 : start + 4], "little")
        if end > len(tlv):
            return []
        found.append(_extension(kind, tlv[start + 4 : end]))
        start = end
    return found


def _bool(byte: int) -> bool:
    return byte != 0


def _b64_or_none(raw: bytes) -> str | None:
    return None if raw == bytes(len(raw)) else _b64(raw)


def _transfer_fee(raw: bytes) -> Json:
    epoch, maximum, basis_points = struct.unpack("<QQH", raw)
    return {"epoch": epoch, "maximumFee": maximum, "transferFeeBasisPoints": basis_points}


def _borsh_string(raw: bytes, offset: int) -> tuple[str, int]:
    size = int.from_bytes(raw[offset : offset + 4], "little")
    if offset + 4 + size > len(raw):
        raise ValueError("truncated")
    return raw[offset + 4 : offset + 4 + size].decode(), offset + 4 + size


def _token_metadata(raw: bytes) -> Json:
    name, at = _borsh_string(raw, 64)
    symbol, at = _borsh_string(raw, at)
    uri, at = _borsh_string(raw, at)
    count, at = int.from_bytes(raw[at : at + 4], "little"), at + 4
    if len(raw) < at:
        raise ValueError("truncated")
    pairs = []
    for _ in range(count):
        key, at = _borsh_string(raw, at)
        value, at = _borsh_string(raw, at)
        pairs.append([key, value])
    return {
        "updateAuthority": _optional_key(raw[:32]),
        "mint": _key(raw, 32),
        "name": name,
        "symbol": symbol,
        "uri": uri,
        "additionalMetadata": pairs,
    }


def _authority_and(second: str) -> Callable[[bytes], Json]:
    return lambda v: {"authority": _optional_key(v[:32]), second: _optional_key(v[32:64])}


# Each Token-2022 extension type: (name, size of its state or None if variable, parser).
_EXTENSIONS: dict[int, tuple[str, int | None, Callable[[bytes], Json] | None]] = {
    1: (
        "transferFeeConfig",
        108,
        lambda v: {
            "transferFeeConfigAuthority": _optional_key(v[:32]),
            "withdrawWithheldAuthority": _optional_key(v[32:64]),
            "withheldAmount": _u64(v, 64),
            "olderTransferFee": _transfer_fee(v[72:90]),
            "newerTransferFee": _transfer_fee(v[90:108]),
        },
    ),
    2: ("transferFeeAmount", 8, lambda v: {"withheldAmount": _u64(v, 0)}),
    3: ("mintCloseAuthority", 32, lambda v: {"closeAuthority": _optional_key(v)}),
    4: (
        "confidentialTransferMint",
        65,
        lambda v: {
            "authority": _optional_key(v[:32]),
            "autoApproveNewAccounts": _bool(v[32]),
            "auditorElgamalPubkey": _b64_or_none(v[33:65]),
        },
    ),
    5: (
        "confidentialTransferAccount",
        295,
        lambda v: {
            "approved": _bool(v[0]),
            "elgamalPubkey": _b64(v[1:33]),
            "pendingBalanceLo": _b64(v[33:97]),
            "pendingBalanceHi": _b64(v[97:161]),
            "availableBalance": _b64(v[161:225]),
            "decryptableAvailableBalance": _b64(v[225:261]),
            "allowConfidentialCredits": _bool(v[261]),
            "allowNonConfidentialCredits": _bool(v[262]),
            "pendingBalanceCreditCounter": _u64(v, 263),
            "maximumPendingBalanceCreditCounter": _u64(v, 271),
            "expectedPendingBalanceCreditCounter": _u64(v, 279),
            "actualPendingBalanceCreditCounter": _u64(v, 287),
        },
    ),
    6: (
        "defaultAccountState",
        1,
        lambda v: {"accountState": TOKEN_STATES.get(v[0], "uninitialized")},
    ),
    7: ("immutableOwner", 0, None),
    8: ("memoTransfer", 1, lambda v: {"requireIncomingTransferMemos": _bool(v[0])}),
    9: ("nonTransferable", 0, None),
    10: (
        "interestBearingConfig",
        52,
        lambda v: {
            "rateAuthority": _optional_key(v[:32]),
            **dict(
                zip(
                    (
                        "initializationTimestamp",
                        "preUpdateAverageRate",
                        "lastUpdateTimestamp",
                        "currentRate",
                    ),
                    struct.unpack("<qhqh", v[32:52]),
                    strict=True,
                )
            ),
        },
    ),
    11: ("cpiGuard", 1, lambda v: {"lockCpi": _bool(v[0])}),
    12: ("permanentDelegate", 32, lambda v: {"delegate": _optional_key(v)}),
    13: ("nonTransferableAccount", 0, None),
    14: (
        "transferHook",
        64,
        lambda v: {"authority": _optional_key(v[:32]), "programId": _optional_key(v[32:64])},
    ),
    15: ("transferHookAccount", 1, lambda v: {"transferring": _bool(v[0])}),
    16: (
        "confidentialTransferFeeConfig",
        129,
        lambda v: {
            "authority": _optional_key(v[:32]),
            "withdrawWithheldAuthorityElgamalPubkey": _b64_or_none(v[32:64]),
            "harvestToMintEnabled": _bool(v[64]),
            "withheldAmount": _b64(v[65:129]),
        },
    ),
    17: ("confidentialTransferFeeAmount", 64, lambda v: {"withheldAmount": _b64(v)}),
    18: ("metadataPointer", 64, _authority_and("metadataAddress")),
    19: ("tokenMetadata", None, _token_metadata),
    20: ("groupPointer", 64, _authority_and("groupAddress")),
    21: (
        "tokenGroup",
        80,
        lambda v: {
            "updateAuthority": _optional_key(v[:32]),
            "mint": _key(v, 32),
            "size": _u64(v, 64),
            "maxSize": _u64(v, 72),
        },
    ),
    22: ("groupMemberPointer", 64, _authority_and("memberAddress")),
    23: (
        "tokenGroupMember",
        72,
        lambda v: {"mint": _key(v, 0), "group": _key(v, 32), "memberNumber": _u64(v, 64)},
    ),
    24: (
        "confidentialMintBurn",
        196,
        lambda v: {
            "confidentialSupply": _b64(v[:64]),
            "decryptableSupply": _b64(v[64:100]),
            "supplyElgamalPubkey": _b64(v[100:132]),
            "pendingBurn": _b64(v[132:196]),
        },
    ),
    25: (
        "scaledUiAmountConfig",
        56,
        lambda v: {
            "authority": _optional_key(v[:32]),
            "multiplier": _rust_float(struct.unpack_from("<d", v, 32)[0]),
            "newMultiplierEffectiveTimestamp": struct.unpack_from("<q", v, 40)[0],
            "newMultiplier": _rust_float(struct.unpack_from("<d", v, 48)[0]),
        },
    ),
    26: (
        "pausableConfig",
        33,
        lambda v: {"authority": _optional_key(v[:32]), "paused": _bool(v[32])},
    ),
    27: ("pausableAccount", 0, None),
}


def _extension(kind: int, value: bytes) -> Json:
    known = _EXTENSIONS.get(kind)
    if known is None:
        return {"extension": "unparseableExtension"}
    name, size, parse = known
    if parse is None:  # a marker: no state
        return {"extension": name}
    if size is not None and len(value) != size:
        return {"extension": "unparseableExtension"}
    try:
        state = parse(value)
    except (ValueError, UnicodeDecodeError, struct.error):
        return {"extension": "unparseableExtension"}
    return {"extension": name, "state": state}


def parse_nonce(data: bytes) -> Json | None:
    """An initialized durable nonce account (others are not parsable, as on a cluster)."""
    if len(data) < 80 or data[:4] not in (b"\0\0\0\0", b"\1\0\0\0") or data[4:8] != b"\1\0\0\0":
        return None
    return {
        "type": "initialized",
        "info": {
            "authority": _key(data, 8),
            "blockhash": str(Hash(data[40:72])),
            "feeCalculator": {"lamportsPerSignature": str(_u64(data, 72))},
        },
    }


def parse_stake(data: bytes) -> Json | None:
    """A stake account (StakeStateV2)."""
    if len(data) < 4:
        return None
    tag = int.from_bytes(data[:4], "little")
    if tag == 0:
        return {"type": "uninitialized"}
    if tag == 3:
        return {"type": "rewardsPool"}
    if tag not in (1, 2) or len(data) < (124 if tag == 1 else 197):
        return None
    unix_timestamp, epoch = struct.unpack_from("<qQ", data, 76)
    meta = {
        "rentExemptReserve": str(_u64(data, 4)),
        "authorized": {"staker": _key(data, 12), "withdrawer": _key(data, 44)},
        "lockup": {"unixTimestamp": unix_timestamp, "epoch": epoch, "custodian": _key(data, 92)},
    }
    stake = None
    if tag == 2:
        amount, activation, deactivation, rate, credits = struct.unpack_from("<QQQdQ", data, 156)
        stake = {
            "delegation": {
                "voter": _key(data, 124),
                "stake": str(amount),
                "activationEpoch": str(activation),
                "deactivationEpoch": str(deactivation),
                "warmupCooldownRate": rate,
            },
            "creditsObserved": credits,
        }
    kind = "initialized" if tag == 1 else "delegated"
    return {"type": kind, "info": {"meta": meta, "stake": stake}}


def parse_sysvar(pubkey: Pubkey, data: bytes) -> Json | None:
    """The clock, rent, epoch schedule and last-restart-slot sysvars."""
    if pubkey == CLOCK and len(data) >= 40:
        slot, start, epoch, leader_epoch, now = struct.unpack_from("<QqQQq", data)
        info: Json = {
            "slot": slot,
            "epoch": epoch,
            "epochStartTimestamp": start,
            "leaderScheduleEpoch": leader_epoch,
            "unixTimestamp": now,
        }
        return {"type": "clock", "info": info}
    if pubkey == RENT and len(data) >= 17:
        per_byte, threshold, burn = struct.unpack_from("<QdB", data)
        info = {
            "lamportsPerByteYear": str(per_byte),
            "exemptionThreshold": threshold,
            "burnPercent": burn,
        }
        return {"type": "rent", "info": info}
    if pubkey == EPOCH_SCHEDULE and len(data) >= 33 and data[16] in (0, 1):
        per_epoch, offset, warmup, first_epoch, first_slot = struct.unpack_from("<QQ?QQ", data)
        info = {
            "slotsPerEpoch": per_epoch,
            "leaderScheduleSlotOffset": offset,
            "warmup": warmup,
            "firstNormalEpoch": first_epoch,
            "firstNormalSlot": first_slot,
        }
        return {"type": "epochSchedule", "info": info}
    if pubkey == LAST_RESTART_SLOT and len(data) >= 8:
        return {"type": "lastRestartSlot", "info": {"lastRestartSlot": _u64(data, 0)}}
    return None


def parse_upgradeable_loader(data: bytes) -> Json | None:
    """A program, its program data or a buffer, of the upgradeable loader."""
    if len(data) < 4:
        return None
    tag = int.from_bytes(data[:4], "little")
    if tag == 0:
        return {"type": "uninitialized"}
    if tag == 2 and len(data) >= 36:
        return {"type": "program", "info": {"programData": _key(data, 4)}}
    if tag == 1 and len(data) >= 37 and data[4] in (0, 1):
        authority = _key(data, 5) if data[4] else None
        return {
            "type": "buffer",
            "info": {"authority": authority, "data": [_b64(data[37:]), "base64"]},
        }
    if tag == 3 and len(data) >= 45 and data[12] in (0, 1):
        info = {
            "slot": _u64(data, 4),
            "authority": _key(data, 13) if data[12] else None,
            "data": [_b64(data[45:]), "base64"],
        }
        return {"type": "programData", "info": info}
    return None
