"""The localnet: a ledger behind Solana's JSON-RPC that stock clients use
unchanged, so that node processes, wallets and dapps on one machine share one
ledger.

`LocalnetRpc.answer` takes one JSON-RPC request body (or a batch: a JSON
array) and returns the response body; serving it over HTTP, and the WebSocket
subscriptions, is the caller's job (``mercato localnet``). The ledger is a
`ClusterLedger`: slots advance on a clock (`run_clock`), a transaction may use
any of the last 150 blockhashes, legacy and version-0 transactions, and every
transaction that landed is kept with its metadata across restarts. Errors are
the cluster's codes and words. Requests are untrusted: bounded, checked, and a
bad one gets a JSON-RPC error and changes nothing.

Methods here: getLatestBlockhash (and the old getRecentBlockhash),
isBlockhashValid, sendTransaction, simulateTransaction, getAccountInfo,
getBalance, getMinimumBalanceForRentExemption, requestAirdrop (lamports, and
the test mint's tokens where the ledger has it: `_testmint`),
getSignatureStatuses, getSlot, getBlockHeight, getHealth, getVersion,
getTransaction, getParsedTransaction, getSignaturesForAddress, getBlock,
getBlockTime, getBlocks, getTransactionCount; ``_rpc_reads`` adds the
read-only rest.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, cast

import trio
from solders.account import Account
from solders.hash import Hash
from solders.message import Message
from solders.pubkey import Pubkey
from solders.rpc.responses import (
    GetAccountInfoResp,
    GetBalanceResp,
    GetLatestBlockhashResp,
    GetMinimumBalanceForRentExemptionResp,
    GetSignatureStatusesResp,
    IsBlockhashValidResp,
    RequestAirdropResp,
    RpcBlockhash,
    RpcResponseContext,
    SendTransactionResp,
)
from solders.signature import Signature
from solders.transaction import Transaction, VersionedTransaction
from solders.transaction_status import (
    TransactionConfirmationStatus,
    TransactionErrorFieldless,
    TransactionErrorInstructionError,
    TransactionStatus,
)

from . import _jsonrpc as jsonrpc
from ._cluster import (
    MAX_SIGNATURES_PAGE,
    SLOT_S,
    WINDOW,
    AnyTransaction,
    ClusterLedger,
    b58,
    error_json,
)
from ._errors import LedgerError
from ._rpc_reads import read_methods

MAX_BODY = 64 * 1024
MAX_SIGNATURES = 256  # per getSignatureStatuses, as on a cluster
MAX_AIRDROP = 1_000 * 10**9  # lamports per request: plenty for a test network
REMEMBERED = 100_000  # signature statuses kept (in memory: a restart forgets them)

PARSE_ERROR = jsonrpc.PARSE_ERROR
INVALID_REQUEST = jsonrpc.INVALID_REQUEST
METHOD_NOT_FOUND = jsonrpc.METHOD_NOT_FOUND
INVALID_PARAMS = jsonrpc.INVALID_PARAMS
INTERNAL = jsonrpc.INTERNAL
PREFLIGHT_FAILED = -32002
SIGNATURE_FAILED = -32003
BLOCK_NOT_AVAILABLE = -32004
VERSION_UNSUPPORTED = -32015
MAX_BATCH = 100
MAX_ACCOUNTS = 100  # per simulateTransaction's accounts option
PACKET_BYTES = 1232  # a transaction's largest wire size, as on a cluster
API_VERSION = "2.2.0"  # the cluster API these answers follow (mercato localnet, LiteSVM)
PROCESSED = "Transaction simulation failed: This transaction has already been processed"
log = logging.getLogger("mercato.localnet")
# solders 0.29's stubs give this __init__(value), but it takes (value, context)
# at run time, like the other responses with a context: typed here as it is.
_is_blockhash_valid_resp = cast(
    "Callable[[bool, RpcResponseContext], IsBlockhashValidResp]", IsBlockhashValidResp
)


_Refused = jsonrpc.Refused


class LocalnetRpc:
    """Answers JSON-RPC requests from ``ledger`` (see the module docstring)."""

    def __init__(self, ledger: ClusterLedger) -> None:
        self.ledger = ledger
        self._statuses: OrderedDict[Signature, TransactionStatus] = OrderedDict()
        self._lock = trio.Lock()  # one transaction at a time, journaled in order
        self._methods: dict[str, Callable[[list[Any]], Awaitable[str]]] = {
            "getLatestBlockhash": self._latest_blockhash,
            "getRecentBlockhash": self._latest_blockhash,
            "isBlockhashValid": self._blockhash_valid,
            "sendTransaction": self._send,
            "simulateTransaction": self._simulate,
            "getAccountInfo": self._account,
            "getBalance": self._balance,
            "getMinimumBalanceForRentExemption": self._rent,
            "requestAirdrop": self._airdrop,
            "getSignatureStatuses": self._signature_statuses,
            "getSlot": self._slot,
            "getBlockHeight": self._slot,
            "getHealth": self._health,
            "getVersion": self._version,
            "getTransaction": self._transaction,
            "getParsedTransaction": self._transaction,
            "getSignaturesForAddress": self._signatures_for,
            "getBlock": self._block,
            "getBlockTime": self._block_time,
            "getBlocks": self._blocks,
            "getTransactionCount": self._transaction_count,
        }
        self._methods.update(read_methods(self))

    async def run_clock(self) -> None:
        """Advance a slot every ``SLOT_S`` until cancelled (the localnet runs it)."""
        while True:
            await trio.sleep(SLOT_S)
            async with self._lock:
                await self.ledger.advance()

    async def answer(self, body: bytes) -> bytes:
        """The response body for one request body, or for a batch (a JSON array of
        requests: an array of answers). Never raises for bad input."""
        if len(body) > MAX_BODY:
            return _error(None, INVALID_REQUEST, f"requests are limited to {MAX_BODY} bytes")
        try:
            request = json.loads(body)
        except (ValueError, RecursionError):
            return _error(None, PARSE_ERROR, "Parse error")
        if isinstance(request, list):
            if not request:
                return _error(None, INVALID_REQUEST, "Invalid request: an empty batch")
            if len(request) > MAX_BATCH:
                return _error(None, INVALID_REQUEST, f"at most {MAX_BATCH} requests per batch")
            answers = [await self._one(r) for r in request]
            return b"[" + b",".join(answers) + b"]"
        return await self._one(request)

    async def _one(self, request: Any) -> bytes:
        request_id: Any = None
        try:
            request_id = jsonrpc.request_id(request)
            method, params = jsonrpc.method_and_params(request, self._methods)
            result = await method(params)
        except _Refused as exc:
            return _error(request_id, exc.code, exc.message, exc.data)
        except LedgerError as exc:
            return _error(request_id, INTERNAL, str(exc))
        except Exception:  # a bug must cost one answer, never the ledger
            log.exception("localnet request failed")
            return _error(request_id, INTERNAL, "internal error: see the localnet's log")
        response = json.loads(result)
        response["id"] = request_id
        return json.dumps(response).encode()

    def _context(self) -> RpcResponseContext:
        return RpcResponseContext(self.ledger.slot, API_VERSION)

    def _with_context(self, value: Any) -> str:
        """A response whose result is ``{"context", "value"}``, as a cluster's."""
        context = {"slot": self.ledger.slot, "apiVersion": API_VERSION}
        return json.dumps({"jsonrpc": "2.0", "result": {"context": context, "value": value}})

    async def _latest_blockhash(self, params: list[Any]) -> str:
        blockhash = await self.ledger.blockhash()
        valid_until = self.ledger.valid_until(blockhash) or self.ledger.slot + WINDOW
        value = RpcBlockhash(blockhash, valid_until)
        return GetLatestBlockhashResp(value, self._context()).to_json()

    async def _blockhash_valid(self, params: list[Any]) -> str:
        wanted = _hash(_param(params, 0, str, "blockhash"))
        valid = self.ledger.valid_until(wanted) is not None
        return _is_blockhash_valid_resp(valid, self._context()).to_json()

    async def _send(self, params: list[Any]) -> str:
        tx = _transaction(params)
        options = _options(params)
        async with self._lock:
            if tx.signatures[0] in self._statuses:  # landed already: it cannot land twice
                raise _Refused(
                    PREFLIGHT_FAILED,
                    PROCESSED,
                    _failure(TransactionErrorFieldless.AlreadyProcessed, [], 0),
                )
            if not options.get("skipPreflight", False):
                # As a cluster's RPC: signatures first, then a simulation. Without
                # preflight the runtime refuses a forgery, and it never lands.
                if not all(tx.verify_with_results()):
                    raise _Refused(SIGNATURE_FAILED, "Transaction signature verification failure")
                checked = await self.ledger.simulate_full(tx, sig_verify=True)
                if checked.err is not None:
                    text = f"Transaction simulation failed: {cluster_text(checked.err)}"
                    data = _failure(checked.err, checked.logs, checked.units)
                    raise _Refused(PREFLIGHT_FAILED, text, data)
            outcome = await self.ledger.run(tx)
            # Only what landed has a status: a transaction refused before its fee
            # (an unknown blockhash) never landed, and its "signature" may be anyone's.
            if outcome.landed:
                self._remember(tx.signatures[0], outcome.err, outcome.slot)
        return SendTransactionResp(tx.signatures[0]).to_json()

    async def _simulate(self, params: list[Any]) -> str:
        tx = _transaction(params)
        options = _options(params)
        sig_verify = bool(options.get("sigVerify", False))
        replace = bool(options.get("replaceRecentBlockhash", False))
        if sig_verify and replace:
            raise _Refused(INVALID_PARAMS, "sigVerify may not be used with replaceRecentBlockhash")
        wanted = options.get("accounts") or {}
        addresses = wanted.get("addresses", []) if isinstance(wanted, dict) else []
        if not isinstance(addresses, list) or len(addresses) > MAX_ACCOUNTS:
            raise _Refused(INVALID_PARAMS, f"accounts.addresses: at most {MAX_ACCOUNTS} keys")
        keys = [_pubkey(a) if isinstance(a, str) else _pubkey("") for a in addresses]
        async with self._lock:  # never the state of a transaction not yet journaled
            outcome = await self.ledger.simulate_full(
                tx, sig_verify=sig_verify, any_blockhash=replace, accounts=keys
            )
            latest = await self.ledger.blockhash()
        accounts = None
        if outcome.accounts is not None:
            accounts = [_account_json(a) for a in outcome.accounts]
        value = {
            "err": error_json(outcome.err),
            "logs": outcome.logs,
            "accounts": accounts,
            "unitsConsumed": outcome.units,
            "returnData": None,
            "innerInstructions": None,
            "replacementBlockhash": (
                {"blockhash": str(latest), "lastValidBlockHeight": self.ledger.slot + WINDOW}
                if replace
                else None
            ),
        }
        return self._with_context(value)

    async def _account(self, params: list[Any]) -> str:
        pubkey = _pubkey(_param(params, 0, str, "pubkey"))
        encoding = _options(params).get("encoding", "base64")
        if encoding != "base64":
            raise _Refused(INVALID_PARAMS, "only base64 encoding is served")
        async with self._lock:
            account = self.ledger.raw_account(pubkey)
        if account is not None and account.lamports == 0:
            account = None
        return GetAccountInfoResp(account, self._context()).to_json()

    async def _balance(self, params: list[Any]) -> str:
        pubkey = _pubkey(_param(params, 0, str, "pubkey"))
        async with self._lock:
            lamports = await self.ledger.balance(pubkey)
        return GetBalanceResp(lamports, self._context()).to_json()

    async def _rent(self, params: list[Any]) -> str:
        size = _param(params, 0, int, "size")
        if not 0 <= size <= 10 * 1024 * 1024:
            raise _Refused(INVALID_PARAMS, "size must be between 0 and 10 MiB")
        return GetMinimumBalanceForRentExemptionResp(await self.ledger.rent(size)).to_json()

    async def _airdrop(self, params: list[Any]) -> str:
        pubkey = _pubkey(_param(params, 0, str, "pubkey"))
        lamports = _param(params, 1, int, "lamports")
        if not 0 < lamports <= MAX_AIRDROP:
            raise _Refused(INVALID_PARAMS, f"lamports must be between 1 and {MAX_AIRDROP}")
        async with self._lock:
            slot = self.ledger.slot
            signature = Signature.from_string(await self.ledger.airdrop(pubkey, lamports))
            self._remember(signature, None, slot)
        return RequestAirdropResp(signature).to_json()

    async def _signature_statuses(self, params: list[Any]) -> str:
        raw = _param(params, 0, list, "signatures")
        if len(raw) > MAX_SIGNATURES:
            raise _Refused(INVALID_PARAMS, f"at most {MAX_SIGNATURES} signatures per call")
        try:
            signatures = [Signature.from_string(s) for s in raw]
        except (TypeError, ValueError) as exc:
            raise _Refused(INVALID_PARAMS, "signatures must be base58 signatures") from exc
        statuses = [self._statuses.get(s) for s in signatures]
        for i, signature in enumerate(signatures):
            # Forgotten (a restart, or long ago): the journal keeps every one that landed.
            if statuses[i] is None:
                statuses[i] = await self._status_on_record(str(signature))
        return GetSignatureStatusesResp(statuses, self._context()).to_json()

    async def _status_on_record(self, signature: str) -> TransactionStatus | None:
        found = await self.ledger.transaction(signature)
        if found is not None:
            err = TransactionStatus.from_json(
                json.dumps({"slot": 0, "confirmations": None, "err": found["meta"]["err"],
                            "status": {"Ok": None}, "confirmationStatus": "finalized"})
            ).err  # fmt: skip
            return TransactionStatus(
                found["slot"], None, None, err, TransactionConfirmationStatus.Finalized
            )
        if await self.ledger.landed(signature):  # a faucet grant
            return TransactionStatus(0, None, None, None, TransactionConfirmationStatus.Finalized)
        return None

    async def _slot(self, params: list[Any]) -> str:
        return json.dumps({"jsonrpc": "2.0", "result": self.ledger.slot})

    async def _health(self, params: list[Any]) -> str:
        return json.dumps({"jsonrpc": "2.0", "result": "ok"})

    async def _version(self, params: list[Any]) -> str:
        version = {"solana-core": API_VERSION, "feature-set": 0}
        return json.dumps({"jsonrpc": "2.0", "result": version})

    async def _transaction(self, params: list[Any]) -> str:
        signature = _param(params, 0, str, "signature")
        options = _options(params)
        encoding = options.get("encoding", "json")
        if encoding not in ("json", "jsonParsed", "base64", "base58"):
            raise _Refused(INVALID_PARAMS, f"Invalid params: unknown encoding {encoding!r}")
        found = await self.ledger.transaction(signature[:128])
        if found is None:
            return json.dumps({"jsonrpc": "2.0", "result": None})
        result = _transaction_json(found, encoding, options.get("maxSupportedTransactionVersion"))
        return json.dumps({"jsonrpc": "2.0", "result": result})

    async def _signatures_for(self, params: list[Any]) -> str:
        address = str(_pubkey(_param(params, 0, str, "address")))
        options = _options(params)
        limit = options.get("limit", MAX_SIGNATURES_PAGE)
        if type(limit) is not int or not 1 <= limit <= MAX_SIGNATURES_PAGE:
            raise _Refused(INVALID_PARAMS, f"Invalid limit; max {MAX_SIGNATURES_PAGE}")
        before, until = options.get("before"), options.get("until")
        for name, value in (("before", before), ("until", until)):
            if value is not None and (not isinstance(value, str) or len(value) > 128):
                raise _Refused(INVALID_PARAMS, f"Invalid param: {name} is not a signature")
        rows = await self.ledger.signatures_for(address, limit, before, until)
        return json.dumps({"jsonrpc": "2.0", "result": rows})

    async def _block(self, params: list[Any]) -> str:
        slot = _param(params, 0, int, "slot")
        options = _options(params)
        encoding = options.get("encoding", "json")
        details = options.get("transactionDetails", "full")
        block = await self.ledger.block_at(slot)
        if block is None:
            raise _Refused(BLOCK_NOT_AVAILABLE, f"Block not available for slot {slot}")
        result: dict[str, Any] = {
            "blockhash": block["blockhash"],
            "previousBlockhash": block["previousBlockhash"],
            "parentSlot": max(slot - 1, 0),
            "blockHeight": slot,
            "blockTime": block["block_time"],
        }
        version = options.get("maxSupportedTransactionVersion")
        if details == "full":
            result["transactions"] = [
                _transaction_json({**t, "slot": slot, "block_time": block["block_time"]},
                                  encoding, version, in_block=True)
                for t in block["transactions"]
            ]  # fmt: skip
        elif details == "signatures":
            result["signatures"] = [t["signature"] for t in block["transactions"]]
        if options.get("rewards", True):
            result["rewards"] = []
        return json.dumps({"jsonrpc": "2.0", "result": result})

    async def _block_time(self, params: list[Any]) -> str:
        slot = _param(params, 0, int, "slot")
        block = await self.ledger.block_at(slot)
        if block is None:
            raise _Refused(BLOCK_NOT_AVAILABLE, f"Block not available for slot {slot}")
        return json.dumps({"jsonrpc": "2.0", "result": block["block_time"]})

    async def _blocks(self, params: list[Any]) -> str:
        start = _param(params, 0, int, "start_slot")
        end = params[1] if len(params) > 1 and isinstance(params[1], int) else self.ledger.slot
        if not 0 <= start <= end or end - start > 500_000:
            raise _Refused(INVALID_PARAMS, "Invalid slot range: at most 500,000 slots")
        last = min(end, self.ledger.slot)
        return json.dumps({"jsonrpc": "2.0", "result": list(range(start, last + 1))})

    async def _transaction_count(self, params: list[Any]) -> str:
        return json.dumps({"jsonrpc": "2.0", "result": await self.ledger.transaction_count()})

    def _remember(self, signature: Signature, err: Any, slot: int) -> None:
        self._statuses[signature] = TransactionStatus(
            slot, None, None, err, TransactionConfirmationStatus.Finalized
        )
        while len(self._statuses) > REMEMBERED:
            self._statuses.popitem(last=False)


def _error(request_id: Any, code: int, message: str, data: Any = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return json.dumps({"jsonrpc": "2.0", "error": error, "id": request_id}).encode()


def _failure(err: Any, logs: list[str], units: int) -> dict[str, Any]:
    """A failed preflight's ``data``, as a cluster sends it."""
    return {
        "err": error_json(err),
        "logs": logs,
        "accounts": None,
        "unitsConsumed": units,
        "returnData": None,
        "innerInstructions": None,
    }


FIELDLESS_TEXT = {
    "AccountInUse": "Account in use",
    "AccountLoadedTwice": "Account loaded twice",
    "AccountNotFound": "Attempt to debit an account but found no record of a prior credit.",
    "ProgramAccountNotFound": "Attempt to load a program that does not exist",
    "InsufficientFundsForFee": "Insufficient funds for fee",
    "InvalidAccountForFee": "This account may not be used to pay transaction fees",
    "AlreadyProcessed": "This transaction has already been processed",
    "BlockhashNotFound": "Blockhash not found",
    "MissingSignatureForFee": "Transaction requires a fee but has no signature present",
    "InvalidAccountIndex": "Transaction contains an invalid account reference",
    "SignatureFailure": "Transaction did not pass signature verification",
    "InvalidProgramForExecution": "This program may not be used for executing instructions",
    "SanitizeFailure": "Transaction failed to sanitize accounts offsets correctly",
    "UnsupportedVersion": "Transaction version is unsupported",
    "InvalidWritableAccount": "Transaction loads a writable account that cannot be written",
    "AddressLookupTableNotFound": "Transaction loads an address table account that doesn't exist",
    "InvalidAddressLookupTableOwner": (
        "Transaction loads an address table account with an invalid owner"
    ),
    "InvalidAddressLookupTableData": "Transaction loads an address table account with invalid data",
    "InvalidAddressLookupTableIndex": "Transaction address table lookup uses an invalid index",
}  # fmt: skip


def cluster_text(err: Any) -> str:
    """A transaction error in a cluster's words (``Blockhash not found``)."""
    if isinstance(err, TransactionErrorFieldless):
        name = str(err).rsplit(".", 1)[-1]
        return FIELDLESS_TEXT.get(name, name)
    if isinstance(err, TransactionErrorInstructionError):
        inner = error_json(err)["InstructionError"][1]
        if isinstance(inner, dict) and "Custom" in inner:
            what = f"custom program error: {inner['Custom']:#x}"
        else:
            name = inner if isinstance(inner, str) else next(iter(inner))
            what = "".join(f" {c.lower()}" if c.isupper() else c for c in name).strip()
        return f"Error processing Instruction {err.index}: {what}"
    shown = error_json(err)
    if isinstance(shown, dict) and "InsufficientFundsForRent" in shown:
        index = shown["InsufficientFundsForRent"]["account_index"]
        return f"Transaction results in an account ({index}) with insufficient funds for rent"
    return json.dumps(shown)


def _account_json(account: Account | None) -> Any:
    if account is None or account.lamports == 0:
        return None
    return {
        "lamports": account.lamports,
        "data": [base64.b64encode(bytes(account.data)).decode(), "base64"],
        "owner": str(account.owner),
        "executable": account.executable,
        "rentEpoch": account.rent_epoch,
        "space": len(account.data),
    }


def _writable(header: Any, index: int, count: int) -> bool:
    """Whether a transaction's static key ``index`` is writable, from its header."""
    signers = header.num_required_signatures
    if index < signers:
        return index < signers - header.num_readonly_signed_accounts
    return index < count - header.num_readonly_unsigned_accounts


def _message_json(tx: AnyTransaction, parsed: bool, loaded: dict[str, list[str]]) -> dict[str, Any]:
    message = tx.message
    header = message.header
    keys = [str(k) for k in message.account_keys]
    out: dict[str, Any] = {"recentBlockhash": str(message.recent_blockhash)}
    if parsed:
        signers = header.num_required_signatures
        out["accountKeys"] = [
            {"pubkey": k, "signer": i < signers, "writable": _writable(header, i, len(keys)),
             "source": "transaction"}
            for i, k in enumerate(keys)
        ] + [{"pubkey": k, "signer": False, "writable": True, "source": "lookupTable"}
             for k in loaded["writable"]] + [
            {"pubkey": k, "signer": False, "writable": False, "source": "lookupTable"}
            for k in loaded["readonly"]]  # fmt: skip
        every = keys + loaded["writable"] + loaded["readonly"]
        out["instructions"] = [
            {"programId": every[ix.program_id_index],
             "accounts": [every[a] for a in ix.accounts],
             "data": b58(bytes(ix.data)), "stackHeight": None}
            for ix in message.instructions
        ]  # fmt: skip
    else:
        out["accountKeys"] = keys
        out["header"] = {
            "numRequiredSignatures": header.num_required_signatures,
            "numReadonlySignedAccounts": header.num_readonly_signed_accounts,
            "numReadonlyUnsignedAccounts": header.num_readonly_unsigned_accounts,
        }
        out["instructions"] = [
            {"programIdIndex": ix.program_id_index, "accounts": list(ix.accounts),
             "data": b58(bytes(ix.data)), "stackHeight": None}
            for ix in message.instructions
        ]  # fmt: skip
    lookups = getattr(message, "address_table_lookups", None)
    if lookups is not None:
        out["addressTableLookups"] = [
            {"accountKey": str(x.account_key), "writableIndexes": list(x.writable_indexes),
             "readonlyIndexes": list(x.readonly_indexes)}
            for x in lookups
        ]  # fmt: skip
    return out


def _transaction_json(
    found: dict[str, Any], encoding: str, max_version: Any, in_block: bool = False
) -> dict[str, Any]:
    """A landed transaction as getTransaction (or getBlock) answers it."""
    raw: bytes = found["tx"]
    tx = VersionedTransaction.from_bytes(raw)
    legacy = isinstance(tx.message, Message)
    if not legacy and max_version is None:
        raise _Refused(
            VERSION_UNSUPPORTED,
            "Transaction version (0) is not supported by the requesting client. Please try "
            "the request again with the following configuration parameter: "
            '"maxSupportedTransactionVersion": 0',
        )
    meta = found["meta"]
    loaded = meta.get("loaded") or {"writable": [], "readonly": []}
    if encoding == "base64":
        shown: Any = [base64.b64encode(raw).decode(), "base64"]
    elif encoding == "base58":
        shown = [b58(raw), "base58"]
    else:
        shown = {
            "signatures": [str(s) for s in tx.signatures],
            "message": _message_json(tx, encoding == "jsonParsed", loaded),
        }
    status = {"Ok": None} if meta["err"] is None else {"Err": meta["err"]}
    result: dict[str, Any] = {
        "transaction": shown,
        "meta": {
            "err": meta["err"],
            "status": status,
            "fee": meta["fee"],
            "preBalances": meta["pre"],
            "postBalances": meta["post"],
            "innerInstructions": [],
            "logMessages": meta["logs"],
            "preTokenBalances": [],
            "postTokenBalances": [],
            "rewards": [],
            "loadedAddresses": loaded,
            "computeUnitsConsumed": meta["units"],
        },
        "version": "legacy" if legacy else 0,
    }
    if not in_block:
        result["slot"] = found["slot"]
        result["blockTime"] = found["block_time"]
    return result


def _param(params: list[Any], index: int, kind: type, name: str) -> Any:
    if len(params) <= index or not isinstance(params[index], kind):
        raise _Refused(INVALID_PARAMS, f"parameter {index} ({name}) must be a {kind.__name__}")
    if kind is int and isinstance(params[index], bool):
        raise _Refused(INVALID_PARAMS, f"parameter {index} ({name}) must be an int")
    return params[index]


def _options(params: list[Any]) -> dict[str, Any]:
    options = params[-1] if len(params) > 1 and isinstance(params[-1], dict) else {}
    return options


def _pubkey(text: str) -> Pubkey:
    try:
        return Pubkey.from_string(text)
    except ValueError as exc:
        raise _Refused(INVALID_PARAMS, "not a base58 public key") from exc


def _too_large(encoding: str, size: int) -> str:
    limit = 4 * PACKET_BYTES // 3 + 4
    return (
        f"{encoding} encoded solana_sdk::transaction::versioned::VersionedTransaction too large:"
        f" {size} bytes (max: encoded/raw {limit}/{PACKET_BYTES})"
    )


def b58decode(text: str) -> bytes:
    """Base58 text to bytes; ValueError if it is not base58."""
    number = 0
    for char in text:
        digit = _B58.find(char)
        if digit < 0:
            raise ValueError(f"{char!r} is not a base58 digit")
        number = number * 58 + digit
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * (len(text) - len(text.lstrip("1"))) + body


_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _hash(text: str) -> Hash:
    try:
        return Hash.from_string(text)
    except ValueError as exc:
        raise _Refused(INVALID_PARAMS, "not a base58 blockhash") from exc


def _transaction(params: list[Any]) -> AnyTransaction:
    """The transaction in ``params``: legacy or version 0, base64 or base58."""
    encoded = _param(params, 0, str, "transaction")
    encoding = _options(params).get("encoding", "base58")
    if encoding not in ("base64", "base58"):
        raise _Refused(
            INVALID_PARAMS, f"unsupported encoding: {encoding}. Supported encodings: base58, base64"
        )
    if len(encoded) > 2 * PACKET_BYTES:
        raise _Refused(INVALID_PARAMS, _too_large(encoding, len(encoded)))
    try:
        raw = (
            base64.b64decode(encoded, validate=True) if encoding == "base64" else b58decode(encoded)
        )
    except (binascii.Error, ValueError) as exc:
        raise _Refused(INVALID_PARAMS, f"invalid {encoding} encoding: {exc}") from exc
    if len(raw) > PACKET_BYTES:
        raise _Refused(INVALID_PARAMS, _too_large(encoding, len(encoded)))
    try:
        versioned = VersionedTransaction.from_bytes(raw)
        versioned.sanitize()
        tx: AnyTransaction = versioned
        if isinstance(versioned.message, Message):
            tx = Transaction.from_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise _Refused(INVALID_PARAMS, "failed to deserialize the transaction") from exc
    except Exception as exc:  # solders' sanitize error has no common base to name
        raise _Refused(INVALID_PARAMS, "invalid transaction: failed to sanitize") from exc
    if not tx.signatures or len(tx.signatures) != tx.message.header.num_required_signatures:
        raise _Refused(INVALID_PARAMS, "the transaction's signatures do not match its message")
    return tx
