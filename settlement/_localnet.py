"""The localnet: an embedded ledger answering the Solana JSON-RPC methods the rpc
ledger uses, so that several node processes on one machine share one ledger.

`LocalnetRpc.answer` takes one JSON-RPC request body and returns the response
body; serving it over HTTP is the caller's job (``mercato localnet``). Every
block is one transaction (as on the embedded ledger) and is final at once.
Responses are built with solders' response types, so they parse exactly as a
cluster's do. Requests are untrusted: bounded, checked, and a bad one gets a
JSON-RPC error and changes nothing.

Methods: getLatestBlockhash, isBlockhashValid, sendTransaction,
simulateTransaction, getAccountInfo, getBalance,
getMinimumBalanceForRentExemption, requestAirdrop, getSignatureStatuses,
getSlot, getBlockHeight, getHealth, getVersion.
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
from solders.hash import Hash
from solders.pubkey import Pubkey
from solders.rpc.errors import SendTransactionPreflightFailureMessage
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
    RpcSimulateTransactionResult,
    SendTransactionResp,
    SimulateTransactionResp,
)
from solders.signature import Signature
from solders.transaction import Transaction
from solders.transaction_status import (
    TransactionConfirmationStatus,
    TransactionErrorInstructionError,
    TransactionErrorInsufficientFundsForRent,
    TransactionStatus,
)

from ._errors import LedgerError
from ._ledger import EmbeddedLedger

MAX_BODY = 64 * 1024
MAX_SIGNATURES = 256  # per getSignatureStatuses, as on a cluster
MAX_AIRDROP = 1_000 * 10**9  # lamports per request: plenty for a test network
REMEMBERED = 100_000  # signature statuses kept (in memory: a restart forgets them)

INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL = -32603
PREFLIGHT_FAILED = -32002
# Errors of transactions that were executed and charged their fee: they landed.
COMMITTED_ERRORS = (TransactionErrorInstructionError, TransactionErrorInsufficientFundsForRent)
log = logging.getLogger("mercato.localnet")
# solders 0.29's stubs give these two __init__(value), but they take (value, context)
# at run time, like the other responses with a context: typed here as they are.
_is_blockhash_valid_resp = cast(
    "Callable[[bool, RpcResponseContext], IsBlockhashValidResp]", IsBlockhashValidResp
)
_simulate_transaction_resp = cast(
    "Callable[[RpcSimulateTransactionResult, RpcResponseContext], SimulateTransactionResp]",
    SimulateTransactionResp,
)


class _Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class LocalnetRpc:
    """Answers JSON-RPC requests from ``ledger`` (see the module docstring)."""

    def __init__(self, ledger: EmbeddedLedger) -> None:
        self.ledger = ledger
        self._statuses: OrderedDict[Signature, TransactionStatus] = OrderedDict()
        self._lock = trio.Lock()  # one transaction at a time, journaled in order
        self._methods: dict[str, Callable[[list[Any]], Awaitable[str]]] = {
            "getLatestBlockhash": self._latest_blockhash,
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
        }

    async def answer(self, body: bytes) -> bytes:
        """The response body for one request body (never raises for bad input)."""
        request_id: Any = None
        try:
            if len(body) > MAX_BODY:
                raise _Refused(INVALID_REQUEST, f"requests are limited to {MAX_BODY} bytes")
            try:
                request = json.loads(body)
            except (ValueError, RecursionError) as exc:
                raise _Refused(INVALID_REQUEST, "the body is not JSON") from exc
            if not isinstance(request, dict):
                raise _Refused(INVALID_REQUEST, "one JSON-RPC request object per call")
            request_id = request.get("id")
            if not isinstance(request_id, int | str | None) or isinstance(request_id, bool):
                request_id = None
                raise _Refused(INVALID_REQUEST, "id must be a number or a string")
            name = request.get("method")
            method = self._methods.get(name) if isinstance(name, str) else None
            if method is None:
                raise _Refused(METHOD_NOT_FOUND, f"method not found: {request.get('method')!r}")
            params = request.get("params", [])
            if not isinstance(params, list):
                raise _Refused(INVALID_PARAMS, "params must be an array")
            result = await method(params)
        except _Refused as exc:
            return _error(request_id, exc.code, exc.message)
        except LedgerError as exc:
            return _error(request_id, INTERNAL, str(exc))
        except Exception:  # a bug must cost one answer, never the ledger
            log.exception("localnet request failed")
            return _error(request_id, INTERNAL, "internal error: see the localnet's log")
        response = json.loads(result)
        response["id"] = request_id
        return json.dumps(response).encode()

    def _context(self) -> RpcResponseContext:
        return RpcResponseContext(self.ledger.block)

    async def _latest_blockhash(self, params: list[Any]) -> str:
        # The runtime takes only the latest blockhash: it is valid this block only.
        value = RpcBlockhash(await self.ledger.blockhash(), self.ledger.block)
        return GetLatestBlockhashResp(value, self._context()).to_json()

    async def _blockhash_valid(self, params: list[Any]) -> str:
        wanted = _hash(_param(params, 0, str, "blockhash"))
        # Only the latest blockhash is valid: the runtime takes no other.
        valid = wanted == await self.ledger.blockhash()
        return _is_blockhash_valid_resp(valid, self._context()).to_json()

    async def _send(self, params: list[Any]) -> str:
        tx = _transaction(params)
        options = _options(params)
        async with self._lock:
            if tx.signatures[0] in self._statuses:  # landed already: it cannot land twice
                return SendTransactionResp(tx.signatures[0]).to_json()
            if not options.get("skipPreflight", False):
                err, logs = await self.ledger.dry_run(tx)
                if err is not None:
                    result = RpcSimulateTransactionResult(err, logs, None, None, None)
                    message = SendTransactionPreflightFailureMessage(
                        f"Transaction simulation failed: {err}", result
                    )
                    error = {"code": PREFLIGHT_FAILED, **json.loads(message.to_json())}
                    return json.dumps({"jsonrpc": "2.0", "error": error, "id": 0})
            err, _ = await self.ledger.execute(tx)
            # Only what was committed has a status: a transaction refused before
            # its fee (a bad signature, an unknown blockhash) never landed, and its
            # "signature" may be anyone's.
            if err is None or isinstance(err, COMMITTED_ERRORS):
                self._remember(tx.signatures[0], err)
        return SendTransactionResp(tx.signatures[0]).to_json()

    async def _simulate(self, params: list[Any]) -> str:
        tx = _transaction(params)
        async with self._lock:  # never the state of a transaction not yet journaled
            err, logs = await self.ledger.dry_run(tx)
        result = RpcSimulateTransactionResult(err, logs, None, None, None)
        return _simulate_transaction_resp(result, self._context()).to_json()

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
            signature = Signature.from_string(await self.ledger.airdrop(pubkey, lamports))
            self._remember(signature, None)
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
            # Forgotten (a restart, or long ago): the journal keeps every success.
            if statuses[i] is None and await self.ledger.landed(str(signature)):
                statuses[i] = TransactionStatus(
                    0, None, None, None, TransactionConfirmationStatus.Finalized
                )
        return GetSignatureStatusesResp(statuses, self._context()).to_json()

    async def _slot(self, params: list[Any]) -> str:
        return json.dumps({"jsonrpc": "2.0", "result": self.ledger.block, "id": 0})

    async def _health(self, params: list[Any]) -> str:
        return json.dumps({"jsonrpc": "2.0", "result": "ok", "id": 0})

    async def _version(self, params: list[Any]) -> str:
        version = {"solana-core": "litesvm (mercato localnet)", "feature-set": 0}
        return json.dumps({"jsonrpc": "2.0", "result": version, "id": 0})

    def _remember(self, signature: Signature, err: Any) -> None:
        self._statuses[signature] = TransactionStatus(
            self.ledger.block, None, None, err, TransactionConfirmationStatus.Finalized
        )
        while len(self._statuses) > REMEMBERED:
            self._statuses.popitem(last=False)


def _error(request_id: Any, code: int, message: str) -> bytes:
    error = {"code": code, "message": message}
    return json.dumps({"jsonrpc": "2.0", "error": error, "id": request_id}).encode()


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


def _hash(text: str) -> Hash:
    try:
        return Hash.from_string(text)
    except ValueError as exc:
        raise _Refused(INVALID_PARAMS, "not a base58 blockhash") from exc


def _transaction(params: list[Any]) -> Transaction:
    encoded = _param(params, 0, str, "transaction")
    if _options(params).get("encoding", "base58") != "base64":
        raise _Refused(INVALID_PARAMS, "send transactions base64-encoded")
    try:
        tx = Transaction.from_bytes(base64.b64decode(encoded, validate=True))
        tx.sanitize()
    except (binascii.Error, ValueError) as exc:
        raise _Refused(INVALID_PARAMS, "not a base64 legacy transaction") from exc
    except Exception as exc:  # solders' sanitize error has no common base to name
        raise _Refused(INVALID_PARAMS, "the transaction is malformed") from exc
    if not tx.signatures or len(tx.signatures) != tx.message.header.num_required_signatures:
        raise _Refused(INVALID_PARAMS, "the transaction's signatures do not match its message")
    return tx
