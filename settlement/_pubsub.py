"""Solana's PubSub (WebSocket) subscriptions for the localnet, read through its JSON-RPC.

`PubSubHub` knows nothing of the ledger: it asks ``answer`` (the localnet's
`LocalnetRpc.answer`: one JSON-RPC request body in, the response body out) with
read methods only (getSignatureStatuses, getAccountInfo, getProgramAccounts,
getSlot), so nothing a client sends reaches the ledger's journal. Carrying
frames is the caller's job: one `Session` per connection takes each text frame
(`Session.handle`) and gives the frames to send (`Session.next_message`).

Methods, with a cluster's shapes: signatureSubscribe (one notification, then it
ends by itself), accountSubscribe, programSubscribe, slotSubscribe,
rootSubscribe, and their Unsubscribe. Statuses are polled every
``SIGNATURE_TICK_S`` while any is awaited, and at once after `PubSubHub.notify`
(the server calls it after each sendTransaction or requestAirdrop); slots every
``SLOT_TICK_S``; accounts and programs on each new slot, on `notify`, and every
``ACCOUNT_TICK_S`` (never more than half the time: a round that took t waits t).

Bounds: `Limits`. A session whose client does not read (its queue past
``max_queued`` messages or ``max_queued_bytes``) ends with code 1008; over
``max_subscriptions`` (or ``per_connection``) a subscribe is refused.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import trio
from solders.pubkey import Pubkey
from solders.signature import Signature

from . import _jsonrpc as jsonrpc

Answer = Callable[[bytes], Awaitable[bytes]]

PARSE_ERROR = jsonrpc.PARSE_ERROR
INVALID_REQUEST = jsonrpc.INVALID_REQUEST
METHOD_NOT_FOUND = jsonrpc.METHOD_NOT_FOUND
INVALID_PARAMS = jsonrpc.INVALID_PARAMS
INTERNAL = jsonrpc.INTERNAL

GOING_AWAY = 1001  # the localnet stops
TOO_SLOW = 1008  # the client does not read its notifications

SIGNATURE_TICK_S = 0.025
SLOT_TICK_S = 0.05
ACCOUNT_TICK_S = 0.1
ERROR_PAUSE_S = 1.0
MAX_SIGNATURES_PER_CALL = 256  # getSignatureStatuses' own bound
MAX_SLOT_BURST = 64  # slots notified at most per tick, when several passed at once
MAX_FILTERS = 4  # per programSubscribe, as on a cluster
SYSTEM_PROGRAM = "11111111111111111111111111111111"
COMMITMENTS = {
    "processed": 0,
    "recent": 0,
    "confirmed": 1,
    "single": 1,
    "singleGossip": 1,
    "finalized": 2,
    "root": 2,
    "max": 2,
}
ACCOUNT_OPTIONS = ("commitment", "encoding", "dataSlice")
PROGRAM_OPTIONS = (*ACCOUNT_OPTIONS, "filters")
log = logging.getLogger("mercato.localnet.pubsub")


@dataclass(frozen=True)
class Limits:
    """The hub's bounds against clients (all connections share one hub)."""

    max_connections: int = 256
    max_subscriptions: int = 10_000
    per_connection: int = 1_000
    max_queued: int = 4_096  # messages waiting for one client
    max_queued_bytes: int = 8 * 1024 * 1024
    max_frame: int = 64 * 1024


_Refused = jsonrpc.Refused


@dataclass(eq=False)
class _Sub:
    id: int
    kind: str  # signature, account, program, slot, root
    session: Session
    key: str = ""  # the signature, or the watch's key
    level: int = 2  # signatures: the commitment awaited
    received: bool = False  # signatures: enableReceivedNotification, not yet sent
    live: bool = True


@dataclass(eq=False)
class _Watch:
    """One account (or program) read with one set of options, for all its subscribers."""

    method: str
    params: list[Any]
    subs: set[_Sub] = field(default_factory=set)
    digest: bytes = b""  # accounts: the last value's
    shape: str | None = None  # accounts: the last data's encoding (for a closed account)
    digests: dict[str, bytes] = field(default_factory=dict)  # programs: by pubkey


class PubSubHub:
    """Subscriptions of every connection; `run` polls the ledger for them."""

    def __init__(self, answer: Answer, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._answer = answer
        self._ids = itertools.count()
        self._sessions: set[Session] = set()
        self._subs: dict[int, _Sub] = {}
        self._signatures: dict[str, set[_Sub]] = {}
        self._accounts: dict[str, _Watch] = {}
        self._programs: dict[str, _Watch] = {}
        self._slot_subs: set[_Sub] = set()
        self._root_subs: set[_Sub] = set()
        self._slot: int | None = None  # the last slot notified (None: not watched)
        self._root: int | None = None
        self._signature_poke = trio.Event()
        self._watch_poke = trio.Event()
        self._closed = trio.Event()
        self._methods: dict[str, Callable[[Session, list[Any]], Awaitable[Any]]] = {
            "signatureSubscribe": self._signature_subscribe,
            "accountSubscribe": self._account_subscribe,
            "programSubscribe": self._program_subscribe,
            "slotSubscribe": self._slot_subscribe,
            "rootSubscribe": self._root_subscribe,
        }
        for kind in ("signature", "account", "program", "slot", "root"):
            self._methods[f"{kind}Unsubscribe"] = self._unsubscribe

    @property
    def subscriptions(self) -> int:
        return len(self._subs)

    @property
    def connections(self) -> int:
        return len(self._sessions)

    def notify(self) -> None:
        """The ledger may have changed (a transaction, an airdrop): check at once."""
        self._signature_poke.set()
        self._watch_poke.set()

    def open_session(self) -> Session | None:
        """A session for a new connection; None when closed or at ``max_connections``."""
        if self._closed.is_set() or len(self._sessions) >= self.limits.max_connections:
            return None
        session = Session(self)
        self._sessions.add(session)
        return session

    def close(self) -> None:
        """End every session with code 1001 (going away); `run` returns."""
        self._closed.set()
        for session in list(self._sessions):
            session.end(GOING_AWAY, "the localnet is stopping")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll for the subscriptions until `close` or cancellation. A failed round
        is logged and retried after ``ERROR_PAUSE_S``; it never ends the hub."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._signature_loop)
            nursery.start_soon(self._watch_loop)
            task_status.started()
            await self._closed.wait()
            nursery.cancel_scope.cancel()

    # Requests

    async def _dispatch(self, session: Session, request: Any) -> bytes:
        request_id: Any = None
        try:
            request_id = jsonrpc.request_id(request)
            method, params = jsonrpc.method_and_params(request, self._methods)
            result = await method(session, params)
        except _Refused as exc:
            return _error(request_id, exc.code, exc.message)
        except Exception:  # a bug must cost one answer, never the connection
            log.exception("pubsub request failed")
            return _error(request_id, INTERNAL, "Internal error: see the localnet's log")
        return _dumps({"jsonrpc": "2.0", "result": result, "id": request_id})

    async def _signature_subscribe(self, session: Session, params: list[Any]) -> int:
        text = _param(params, 0, str, "signature")
        try:
            signature = str(Signature.from_string(text))
        except ValueError as exc:
            raise _Refused(INVALID_PARAMS, "Invalid Request: Invalid signature provided") from exc
        config = _config(params)
        received = config.get("enableReceivedNotification", False)
        if not isinstance(received, bool):
            raise _Refused(INVALID_PARAMS, "Invalid params: enableReceivedNotification: a bool")
        sub = self._register(session, "signature", signature)
        sub.level, sub.received = _commitment(config), received
        self._signatures.setdefault(signature, set()).add(sub)
        self._signature_poke.set()  # it may have landed already
        return sub.id

    async def _account_subscribe(self, session: Session, params: list[Any]) -> int:
        pubkey = _pubkey(_param(params, 0, str, "pubkey"))
        options = _options(_config(params), ACCOUNT_OPTIONS)
        _commitment(options)
        call = [pubkey, options] if options else [pubkey]
        key = _dumps(call, sort_keys=True).decode()
        self._check_room(session)
        watch = self._accounts.get(key)
        if watch is None:  # the value now, so that the first change is seen
            result = _result(await self._call("getAccountInfo", call))
            value = result.get("value") if isinstance(result, dict) else None
            watch = _Watch("getAccountInfo", call, digest=_digest(value), shape=_shape(value))
        sub = self._register(session, "account", key)
        self._accounts.setdefault(key, watch).subs.add(sub)  # (one may have come meanwhile)
        self._watch_poke.set()
        return sub.id

    async def _program_subscribe(self, session: Session, params: list[Any]) -> int:
        program = _pubkey(_param(params, 0, str, "program id"))
        options = _options(_config(params), PROGRAM_OPTIONS)
        _commitment(options)
        filters = options.get("filters", [])
        if not isinstance(filters, list) or len(filters) > MAX_FILTERS:
            raise _Refused(INVALID_PARAMS, f"Invalid params: at most {MAX_FILTERS} filters")
        call = [program, options] if options else [program]
        key = _dumps(call, sort_keys=True).decode()
        self._check_room(session)
        watch = self._programs.get(key)
        if watch is None:  # the accounts now, so that the first change is seen
            try:
                result = _result(await self._call("getProgramAccounts", call))
            except _Refused as exc:
                if exc.code == METHOD_NOT_FOUND:
                    raise _Refused(
                        METHOD_NOT_FOUND,
                        "programSubscribe is not supported yet: this localnet does not "
                        "answer getProgramAccounts",
                    ) from exc
                raise
            digests = {a["pubkey"]: _digest(a.get("account")) for a in _program_accounts(result)}
            watch = _Watch("getProgramAccounts", call, digests=digests)
        sub = self._register(session, "program", key)
        self._programs.setdefault(key, watch).subs.add(sub)
        self._watch_poke.set()
        return sub.id

    async def _slot_subscribe(self, session: Session, params: list[Any]) -> int:
        self._check_room(session)
        if self._slot is None:
            await self._baseline()
        sub = self._register(session, "slot")
        self._slot_subs.add(sub)
        self._watch_poke.set()
        return sub.id

    async def _root_subscribe(self, session: Session, params: list[Any]) -> int:
        self._check_room(session)
        if self._slot is None:
            await self._baseline()
        sub = self._register(session, "root")
        self._root_subs.add(sub)
        self._watch_poke.set()
        return sub.id

    async def _unsubscribe(self, session: Session, params: list[Any]) -> bool:
        # As on a cluster, any of the Unsubscribe methods ends any of the session's.
        sub_id = _param(params, 0, int, "subscription id")
        sub = session._subs.get(sub_id)
        if sub is None:
            raise _Refused(INVALID_PARAMS, "Invalid subscription id.")
        self._drop(sub)
        return True

    def _check_room(self, session: Session) -> None:
        if session.ended:
            raise _Refused(INTERNAL, "Internal error: the connection is closing")
        if len(self._subs) >= self.limits.max_subscriptions:
            raise _Refused(
                INTERNAL, "Internal Error: Subscription refused. Node subscription limit reached"
            )
        if len(session._subs) >= self.limits.per_connection:
            raise _Refused(
                INTERNAL,
                "Internal Error: Subscription refused. Connection subscription limit reached "
                f"({self.limits.per_connection})",
            )

    def _register(self, session: Session, kind: str, key: str = "") -> _Sub:
        self._check_room(session)  # again: the checks before may have awaited
        sub = _Sub(next(self._ids), kind, session, key)
        self._subs[sub.id] = sub
        session._subs[sub.id] = sub
        return sub

    def _drop(self, sub: _Sub) -> None:
        if not sub.live:
            return
        sub.live = False
        self._subs.pop(sub.id, None)
        sub.session._subs.pop(sub.id, None)
        if sub.kind == "signature":
            waiting = self._signatures.get(sub.key)
            if waiting is not None:
                waiting.discard(sub)
                if not waiting:
                    del self._signatures[sub.key]
        elif sub.kind in ("account", "program"):
            watches = self._accounts if sub.kind == "account" else self._programs
            watch = watches.get(sub.key)
            if watch is not None:
                watch.subs.discard(sub)
                if not watch.subs:
                    del watches[sub.key]
        else:
            (self._slot_subs if sub.kind == "slot" else self._root_subs).discard(sub)

    def _forget(self, session: Session) -> None:
        for sub in list(session._subs.values()):
            self._drop(sub)
        self._sessions.discard(session)

    async def _call(self, method: str, params: list[Any]) -> dict[str, Any]:
        body = _dumps({"jsonrpc": "2.0", "id": 0, "method": method, "params": params})
        reply = json.loads(await self._answer(body))
        if not isinstance(reply, dict):
            raise _Refused(INTERNAL, f"Internal error: {method} answered {reply!r:.100}")
        return reply

    # Polling

    async def _signature_loop(self) -> None:
        while True:
            if self._signatures:
                calls = math.ceil(len(self._signatures) / MAX_SIGNATURES_PER_CALL)
                with trio.move_on_after(min(SIGNATURE_TICK_S * calls, 1.0)):
                    await self._signature_poke.wait()
            else:
                await self._signature_poke.wait()
            self._signature_poke = trio.Event()
            try:
                await self._check_signatures()
            except Exception:
                log.exception("pubsub: checking signatures failed")
                await trio.sleep(ERROR_PAUSE_S)

    async def _check_signatures(self) -> None:
        pending = list(self._signatures)
        for start in range(0, len(pending), MAX_SIGNATURES_PER_CALL):
            chunk = pending[start : start + MAX_SIGNATURES_PER_CALL]
            reply = await self._call(
                "getSignatureStatuses", [chunk, {"searchTransactionHistory": True}]
            )
            result = _result(reply)
            context_slot = result["context"]["slot"]
            for signature, status in zip(chunk, result["value"], strict=True):
                if status is None:
                    continue
                slot = status.get("slot", context_slot)
                level = _status_level(status)
                for sub in list(self._signatures.get(signature, ())):
                    if sub.received:
                        sub.received = False
                        value: Any = "receivedSignature"
                        sub.session.push(_notification("signature", slot, value, sub.id))
                    if level >= sub.level and sub.live:
                        value = {"err": status.get("err")}
                        sub.session.push(_notification("signature", slot, value, sub.id))
                        self._drop(sub)

    async def _watch_loop(self) -> None:
        due = False  # accounts and programs: a check is owed (a new slot, a poke)
        earliest = last_round = -math.inf
        pause = ACCOUNT_TICK_S
        while True:
            if not (self._slot_subs or self._root_subs or self._accounts or self._programs):
                self._slot = self._root = None  # not watched: a subscriber's baseline is new
                await self._watch_poke.wait()
            with trio.move_on_after(SLOT_TICK_S):
                await self._watch_poke.wait()
            due = due or self._watch_poke.is_set()
            self._watch_poke = trio.Event()
            try:
                due = await self._check_slots() or due
                now = trio.current_time()
                if not (self._accounts or self._programs):
                    due = False
                elif (due or now >= last_round + pause) and now >= earliest:
                    due = False
                    await self._check_accounts()
                    await self._check_programs()
                    last_round = trio.current_time()
                    took = last_round - now
                    earliest, pause = last_round + took, max(ACCOUNT_TICK_S, 2 * took)
            except Exception:
                log.exception("pubsub: a watch round failed")
                await trio.sleep(ERROR_PAUSE_S)

    async def _slots(self) -> tuple[int, int]:
        """(the latest slot, the latest root)."""
        slot = _result(await self._call("getSlot", [{"commitment": "processed"}]))
        root = _result(await self._call("getSlot", [{"commitment": "finalized"}]))
        if not isinstance(slot, int) or not isinstance(root, int):
            raise _Refused(INTERNAL, f"Internal error: getSlot answered {slot!r}, {root!r}")
        return slot, min(root, slot)

    async def _baseline(self) -> None:
        """The slot and root now, so that a new subscriber hears only of later ones."""
        slot, root = await self._slots()
        if self._slot is None:
            self._slot, self._root = slot, root

    async def _check_slots(self) -> bool:
        """Notify slots and roots passed since the last check; True if the slot moved."""
        slot, root = await self._slots()
        if self._slot is None or self._root is None:
            self._slot, self._root = slot, root
            return False
        moved = slot > self._slot
        for s in range(max(self._slot + 1, slot - MAX_SLOT_BURST + 1), slot + 1):
            shown = {"parent": s - 1, "root": min(root, s), "slot": s}
            for sub in list(self._slot_subs):
                sub.session.push(_message("slotNotification", shown, sub.id))
        for r in range(max(self._root + 1, root - MAX_SLOT_BURST + 1), root + 1):
            for sub in list(self._root_subs):
                sub.session.push(_message("rootNotification", r, sub.id))
        self._slot, self._root = max(slot, self._slot), max(root, self._root)
        return moved

    async def _check_accounts(self) -> None:
        for key, watch in list(self._accounts.items()):
            reply = await self._call(watch.method, watch.params)
            if self._accounts.get(key) is not watch or "error" in reply:
                continue
            result = reply["result"]
            value = result.get("value")
            digest = _digest(value)
            if digest == watch.digest:
                continue
            watch.digest = digest
            if value is None:  # closed: a cluster sends the empty account
                value = _closed_account(watch.shape)
            else:
                watch.shape = _shape(value)
            slot = result.get("context", {}).get("slot")
            for sub in list(watch.subs):
                sub.session.push(_notification("account", slot, value, sub.id))

    async def _check_programs(self) -> None:
        for key, watch in list(self._programs.items()):
            reply = await self._call(watch.method, watch.params)
            if self._programs.get(key) is not watch or "error" in reply:
                continue
            result = reply["result"]
            context = result.get("context", {}) if isinstance(result, dict) else {}
            slot = context.get("slot", self._slot)
            digests: dict[str, bytes] = {}
            changed = []
            for account in _program_accounts(result):
                digest = digests[account["pubkey"]] = _digest(account.get("account"))
                if watch.digests.get(account["pubkey"]) != digest:
                    changed.append(account)
            watch.digests = digests
            for account in changed:
                for sub in list(watch.subs):
                    sub.session.push(_notification("program", slot, account, sub.id))


class Session:
    """One connection's subscriptions and the frames waiting to be sent to it."""

    def __init__(self, hub: PubSubHub) -> None:
        self._hub = hub
        self._subs: dict[int, _Sub] = {}
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._ready = trio.Event()
        self.close_code: int | None = None
        self.close_reason = ""

    @property
    def ended(self) -> bool:
        return self.close_code is not None

    async def handle(self, frame: str | bytes) -> None:
        """Answer one frame (its answer is queued, before any notification of a
        subscription it made). Never raises for bad input; cancellation leaves the
        subscriptions made so far in place."""
        if self.ended:
            return
        if len(frame) > self._hub.limits.max_frame:
            limit = self._hub.limits.max_frame
            self.push(
                _error(None, INVALID_REQUEST, f"Invalid request: frames are limited to {limit}")
            )
            return
        try:
            request = json.loads(frame)
        except (ValueError, RecursionError):
            self.push(_error(None, PARSE_ERROR, "Parse error"))
            return
        if isinstance(request, list):
            self.push(
                _error(None, INVALID_REQUEST, "Invalid request: one request per frame (no batches)")
            )
            return
        self.push(await self._hub._dispatch(self, request))

    def push(self, message: bytes) -> None:
        """Queue a frame; past the bounds, end the session (TOO_SLOW) instead."""
        if self.ended:
            return
        limits = self._hub.limits
        if len(self._queue) >= limits.max_queued or (
            self._queue and self._queued_bytes + len(message) > limits.max_queued_bytes
        ):
            log.warning("pubsub: a client does not read its notifications: disconnected")
            self.end(TOO_SLOW, "too slow: too many notifications unread")
            return
        self._queue.append(message)
        self._queued_bytes += len(message)
        self._ready.set()

    async def next_message(self) -> str | None:
        """The next frame to send, waiting for one; None once the session ended
        (`close_code` says why). Safe to cancel: nothing is lost."""
        while not self.ended:
            if self._queue:
                message = self._queue.popleft()
                self._queued_bytes -= len(message)
                return message.decode()
            self._ready = trio.Event()
            await self._ready.wait()
        return None

    def end(self, code: int, reason: str) -> None:
        """End the session: its subscriptions stop, its queue is dropped."""
        if self.ended:
            return
        self.close_code, self.close_reason = code, reason
        self._queue.clear()
        self._queued_bytes = 0
        self._ready.set()
        self._hub._forget(self)

    def close(self) -> None:
        """The connection is gone: forget the session (idempotent)."""
        self.end(GOING_AWAY, "closed")


def _dumps(value: Any, sort_keys: bool = False) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=sort_keys).encode()


def _error(request_id: Any, code: int, message: str) -> bytes:
    error = {"code": code, "message": message}
    return _dumps({"jsonrpc": "2.0", "error": error, "id": request_id})


def _message(method: str, result: Any, sub_id: int) -> bytes:
    params = {"result": result, "subscription": sub_id}
    return _dumps({"jsonrpc": "2.0", "method": method, "params": params})


def _notification(kind: str, slot: Any, value: Any, sub_id: int) -> bytes:
    return _message(f"{kind}Notification", {"context": {"slot": slot}, "value": value}, sub_id)


def _result(reply: dict[str, Any]) -> Any:
    """A reply's result; its error (code and message) refused to the client."""
    error = reply.get("error")
    if error is not None:
        code = error.get("code") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        raise _Refused(
            code if isinstance(code, int) else INTERNAL,
            message if isinstance(message, str) else "Internal error",
        )
    return reply.get("result")


def _program_accounts(result: Any) -> Iterator[dict[str, Any]]:
    """The accounts of a getProgramAccounts result (with or without its context)."""
    accounts = result.get("value") if isinstance(result, dict) else result
    for account in accounts if isinstance(accounts, list) else ():
        if isinstance(account, dict) and isinstance(account.get("pubkey"), str):
            yield account


def _param(params: list[Any], index: int, kind: type, name: str) -> Any:
    value = params[index] if len(params) > index else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _Refused(
            INVALID_PARAMS, f"Invalid params: parameter {index} ({name}) must be a {kind.__name__}"
        )
    return value


def _config(params: list[Any]) -> dict[str, Any]:
    config = params[1] if len(params) > 1 else None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise _Refused(INVALID_PARAMS, "Invalid params: the configuration must be an object")
    return config


def _options(config: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The options passed on to the read method: only those it has."""
    return {name: config[name] for name in names if config.get(name) is not None}


def _commitment(config: dict[str, Any]) -> int:
    name = config.get("commitment", "finalized")
    level = COMMITMENTS.get(name) if isinstance(name, str) else None
    if level is None:
        raise _Refused(INVALID_PARAMS, f"Invalid params: unknown commitment {name!r:.40}")
    return level


def _pubkey(text: str) -> str:
    try:
        return str(Pubkey.from_string(text))
    except ValueError as exc:
        raise _Refused(INVALID_PARAMS, "Invalid Request: Invalid pubkey provided") from exc


def _status_level(status: dict[str, Any]) -> int:
    name = status.get("confirmationStatus")
    if isinstance(name, str) and name in COMMITMENTS:
        return COMMITMENTS[name]
    return 2 if status.get("confirmations") is None else 0  # no status: rooted or not


def _digest(value: Any) -> bytes:
    return hashlib.blake2b(_dumps(value), digest_size=16).digest()


def _shape(value: Any) -> str | None:
    """The encoding of an account's data, as shown (None: a bare base58 string)."""
    data = value.get("data") if isinstance(value, dict) else None
    if isinstance(data, list) and len(data) == 2 and isinstance(data[1], str):
        return data[1]
    return None if isinstance(data, str) else "base64"  # jsonParsed falls back to base64


def _closed_account(shape: str | None) -> dict[str, Any]:
    return {
        "lamports": 0,
        "data": "" if shape is None else ["", shape],
        "owner": SYSTEM_PROGRAM,
        "executable": False,
        "rentEpoch": 0,
        "space": 0,
    }
