"""The control API: HTTP + JSON on a loopback address, for the CLI and scripts.

Every route but ``/v1/health`` and ``/openapi.json`` needs
``Authorization: Bearer <token>`` with the token from ``<data dir>/api.token``
(401 otherwise). Bodies above ``api.max_body_bytes`` get 413. Errors are
``{"error": {"code": ..., "message": ...}}``. The OpenAPI document is built from
the same route table that dispatches requests, so the two cannot drift.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import trio
from solders.pubkey import Pubkey

from mercato.crdt import (
    DependencyConflict,
    ListingNotFound,
    Query,
    QueryError,
    RegistryError,
    SchemaError,
)
from mercato.p2p import BadAddress, P2PError, RemoteError, b58decode, public_key_of_peer
from mercato.runtime import InputTooLarge, InvalidModule, Limits, LimitsError
from mercato.settlement import ChannelError, LedgerError, LedgerUnreachable, LockupInForce

from ._builds import BuildError, QuotaExceeded, UnknownBuild, check_cid
from ._errors import KeyExists, KeyNotFound, KeyStoreError, NotServed
from ._http import HttpError, Request, Response
from ._settlement import channel_info
from ._tasklog import TaskRecord
from ._tasks import BadReceipt, Receipt, TaskError, TaskRefused, UnknownAgent
from ._version import __version__

if TYPE_CHECKING:
    from ._node import Node

log = logging.getLogger("mercato.api")

_ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "required": ["code", "message"],
        }
    },
}
_KEY_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "kind": {"type": "string", "enum": ["node", "account"]},
        "public_key": {"type": "string", "description": "hex"},
        "address": {"type": "string", "description": "base58 (Solana address)"},
        "peer_id": {"type": ["string", "null"]},
        "path": {"type": "string"},
    },
}
_PEER_BODY = {
    "type": "object",
    "properties": {"peer": {"type": "string", "maxLength": 512}},
    "required": ["peer"],
}
_EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "seq": {"type": "integer"},
        "ts": {"type": "string"},
        "kind": {"type": "string"},
        "data": {"type": "object"},
        "prev_hash": {"type": "string"},
        "hash": {"type": "string"},
    },
}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    summary: str
    handler: Callable[[Node, Request], Awaitable[Response]]
    auth: bool = True
    response: dict[str, Any] | None = None
    body: dict[str, Any] | None = None
    query: tuple[tuple[str, str, str], ...] = ()  # (name, type, description)
    errors: tuple[int, ...] = ()

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method != self.method:
            return None
        want, got = self.path.strip("/").split("/"), path.strip("/").split("/")
        if len(want) != len(got):
            return None
        params = {}
        for w, g in zip(want, got, strict=True):
            if w.startswith("{"):
                params[w[1:-1]] = unquote(g)
            elif w != g:
                return None
        return params


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(400, "bad_query", f"query parameter {name!r} must be an integer") from None
    if not low <= value <= high:
        raise HttpError(400, "bad_query", f"query parameter {name!r} must be in [{low}, {high}]")
    return value


async def _health(node: Node, request: Request) -> Response:
    return Response.json(200, {"status": "ok", "version": __version__, "instance": node.instance})


async def _openapi(node: Node, request: Request) -> Response:
    return Response.json(200, openapi_document(node.api_url))


async def _status(node: Node, request: Request) -> Response:
    return Response.json(200, await node.status())


async def _shutdown(node: Node, request: Request) -> Response:
    node.request_stop("control API")
    return Response.json(202, {"status": "stopping"})


async def _keys_list(node: Node, request: Request) -> Response:
    return Response.json(200, {"keys": await node.call(node.control.keys_list)})


async def _keys_new(node: Node, request: Request) -> Response:
    body = request.json()
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise HttpError(400, "bad_body", 'expected a JSON object {"name": "<account name>"}')
    try:
        key = await node.call(node.control.keys_new, body["name"])
    except KeyExists as exc:
        raise HttpError(409, "key_exists", str(exc)) from None
    except KeyStoreError as exc:
        raise HttpError(400, "bad_key_name", str(exc)) from None
    return Response.json(201, key)


async def _keys_show(node: Node, request: Request) -> Response:
    try:
        key = await node.call(node.control.keys_show, request.params["name"])
    except KeyNotFound as exc:
        raise HttpError(404, "no_such_key", str(exc)) from None
    except KeyStoreError as exc:
        raise HttpError(400, "bad_key", str(exc)) from None
    return Response.json(200, key)


async def _events(node: Node, request: Request) -> Response:
    after = _int_param(request, "after", 0, 0, 2**62)
    limit = _int_param(request, "limit", 100, 1, 1000)
    kind = request.query.get("kind")
    return Response.json(200, await node.call(node.control.events, after, limit, kind))


async def _events_verify(node: Node, request: Request) -> Response:
    return Response.json(200, await node.call(node.control.events_verify))


async def _peers(node: Node, request: Request) -> Response:
    host = node.overlay.host
    peers = [
        {"peer_id": p, "addrs": host.peer_addrs(p), "protocols": host.protocols_of(p)}
        for p in host.connected_peers()
    ]
    return Response.json(200, {"peers": peers, "banned": host.banned_peers()})


def _peer_arg(request: Request) -> str:
    body = request.json()
    if not isinstance(body, dict) or not isinstance(body.get("peer"), str) or not body["peer"]:
        raise HttpError(400, "bad_body", 'expected {"peer": "<peer id or /ip4/.../p2p/<peer id>>"}')
    if len(body["peer"]) > 512:
        raise HttpError(400, "bad_body", "peer is too long")
    return body["peer"]


async def _reach(node: Node, peer: str) -> str:
    """A peer id from a peer id or a full multiaddr (dialing the latter)."""
    try:
        if peer.startswith("/"):
            return await node.overlay.host.connect(peer)
        if len(b58decode(peer)) < 20:
            raise ValueError(peer)
    except (ValueError, BadAddress):
        raise HttpError(
            400,
            "bad_peer",
            f"{peer[:100]!r} is neither a peer id nor a multiaddr "
            "like /ip4/HOST/tcp/PORT/p2p/PEER_ID",
        ) from None
    except P2PError as exc:
        raise HttpError(502, "unreachable", str(exc)) from None
    return peer


async def _connect(node: Node, request: Request) -> Response:
    target = _peer_arg(request)
    if not target.startswith("/"):
        raise HttpError(
            400, "bad_peer", "connect needs a multiaddr: /ip4/HOST/tcp/PORT/p2p/PEER_ID"
        )
    peer = await _reach(node, target)
    return Response.json(200, {"peer_id": peer})


async def _ping(node: Node, request: Request) -> Response:
    peer = await _reach(node, _peer_arg(request))
    try:
        rtts = await node.overlay.host.ping(peer, count=3)
    except P2PError as exc:
        raise HttpError(502, "unreachable", str(exc)) from None
    return Response.json(200, {"peer_id": peer, "rtt_ms": [round(r, 3) for r in rtts]})


def _body_object(request: Request, *required: str) -> dict[str, Any]:
    body = request.json()
    if not isinstance(body, dict):
        raise HttpError(400, "bad_body", "expected a JSON object")
    for key in required:
        if key not in body:
            raise HttpError(400, "bad_body", f"missing {key!r}")
    return body


async def _registry_call(call: Awaitable[Any]) -> Any:
    """Map the registry's and the key store's errors to answers."""
    try:
        return await call
    except SchemaError as exc:
        raise HttpError(400, "invalid_listing", str(exc)) from None
    except ListingNotFound as exc:
        raise HttpError(404, "no_such_listing", str(exc)) from None
    except DependencyConflict as exc:
        raise HttpError(409, "conflict", str(exc)) from None
    except KeyNotFound as exc:
        raise HttpError(404, "no_such_key", str(exc)) from None
    except (KeyStoreError, RegistryError) as exc:
        raise HttpError(400, "bad_request", str(exc)) from None


def _account_and(request: Request, field: str, kind: type) -> tuple[str, Any]:
    """``{"account": "...", field: <kind>}`` from the body; the account defaults to 'default'."""
    body = _body_object(request, field)
    account = body.get("account", "default")
    if not isinstance(account, str) or not isinstance(body[field], kind):
        shape = "{...}" if kind is dict else '"..."'
        raise HttpError(400, "bad_body", f'expected {{"account": "...", "{field}": {shape}}}')
    return account, body[field]


async def _publish(node: Node, request: Request) -> Response:
    account, listing = _account_and(request, "listing", dict)
    return Response.json(200, await _registry_call(node.registry.publish(account, listing)))


async def _release(node: Node, request: Request) -> Response:
    account, release = _account_and(request, "release", dict)
    build = request.json().get("build")
    if build is None:
        return Response.json(200, await _registry_call(node.registry.release(account, release)))
    if not isinstance(build, str) or not build.startswith("/") or len(build) > 4096:
        raise HttpError(400, "bad_body", '"build" is the absolute path of the build file')
    call = node.release_build(account, release, Path(build))
    return Response.json(200, await _build_call(_registry_call(call)))


async def _deprecate(node: Node, request: Request) -> Response:
    account, name = _account_and(request, "name", str)
    return Response.json(200, await _registry_call(node.registry.deprecate(account, name)))


def _query(request: Request) -> Query:
    q = request.query
    try:
        max_price = int(q["max_price"]) if "max_price" in q else None
        limit = int(q.get("limit", "20"))
    except ValueError:
        raise HttpError(400, "bad_query", "max_price and limit must be whole numbers") from None
    if not -(2**62) < (max_price or 0) < 2**62 or not 0 < limit < 2**31:
        raise HttpError(400, "bad_query", "max_price or limit is out of range")
    query = Query(
        text=q.get("text", ""),
        kind=q.get("kind"),
        capability=q.get("capability"),
        tag=q.get("tag"),
        max_price=max_price,
        publisher=q.get("publisher"),
        sort=q.get("sort", "relevance"),
        limit=limit,
        cursor=q.get("cursor"),
    )
    try:
        query.check()
    except QueryError as exc:
        raise HttpError(400, "bad_query", str(exc)) from None
    return query


async def _remote(call: Awaitable[Any]) -> Any:
    """Map a remote query's failures: the peer's fault or unreachable is 502."""
    try:
        return await call
    except QueryError as exc:
        raise HttpError(502, "bad_answer", str(exc)) from None
    except RemoteError as exc:
        raise HttpError(502, "refused", f"the peer refused ({exc.code}): {exc.message}") from None
    except P2PError as exc:
        raise HttpError(502, "unreachable", f"the peer did not answer: {exc}") from None


async def _search(node: Node, request: Request) -> Response:
    query = _query(request)
    if "peer" in request.query:
        peer = await _reach(node, request.query["peer"])
        return Response.json(200, await _remote(node.registry.remote_search(peer, query)))
    page = await _registry_call(node.registry.search(query))
    return Response.json(200, page)


async def _show(node: Node, request: Request) -> Response:
    publisher, name = request.params["publisher"], request.params["name"]
    if "peer" in request.query:
        peer = await _reach(node, request.query["peer"])
        found = await _remote(node.registry.remote_show(peer, publisher, name))
        where = "on that peer"
    else:
        found = await node.registry.show(publisher, name)
        where = "on this node"
    if found is None:
        raise HttpError(404, "no_such_listing", f"no such listing {where}")
    return Response.json(200, found)


async def _resolve(node: Node, request: Request) -> Response:
    ref, range_text = request.query.get("ref", ""), request.query.get("range", "*")
    if ref.count("/") != 1 or len(ref) > 200:
        raise HttpError(400, "bad_query", "ref must be PUBLISHER/NAME")
    return Response.json(200, await _registry_call(node.registry.resolve(ref, range_text)))


MAX_WAITING_RUNS = 8  # runs queued for a slot before the route answers 503
MAX_API_RUN_S = 50.0  # within the HTTP server's per-connection time


def _base64_field(body: dict[str, Any], name: str) -> bytes:
    value = body.get(name, "")
    try:
        if not isinstance(value, str):
            raise ValueError(name)
        return base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise HttpError(400, "bad_body", f"{name!r} must be base64 text") from None


def _run_limits(node: Node, body: dict[str, Any]) -> Limits:
    caps = node.config.runtime
    try:
        limits = Limits.from_wire(body.get("limits", {}))
    except LimitsError as exc:
        raise HttpError(400, "bad_limits", str(exc)) from None
    if limits.memory_mb > caps.max_memory_mb:
        raise HttpError(
            400, "bad_limits", f"memory_mb is capped at {caps.max_memory_mb} on this node"
        )
    longest = min(caps.max_timeout_s, MAX_API_RUN_S)
    if limits.timeout_s > longest:
        raise HttpError(400, "bad_limits", f"timeout_s is capped at {longest:g} on this route")
    return limits


async def _runtime_run(node: Node, request: Request) -> Response:
    body = _body_object(request, "wasm")
    wasm, stdin = _base64_field(body, "wasm"), _base64_field(body, "input")
    limits = _run_limits(node, body)
    if node.runtime.waiting >= MAX_WAITING_RUNS:
        raise HttpError(503, "busy", "every runtime slot is busy and runs are queued; retry later")
    started = time.perf_counter()
    try:
        result = await node.runtime.run(wasm, stdin, limits)
    except InvalidModule as exc:
        raise HttpError(400, "invalid_module", str(exc)) from None
    except InputTooLarge as exc:
        raise HttpError(400, "input_too_large", str(exc)) from None
    node.metrics.runtime_runs.labels(outcome=result.outcome.value).inc()
    node.metrics.runtime_seconds.observe(time.perf_counter() - started)

    def encode() -> Response:  # outputs may be megabytes: off the event loop
        wire = result.to_wire()
        wire["output"] = base64.b64encode(result.output).decode()
        wire["stderr"] = base64.b64encode(result.stderr).decode()
        return Response.json(200, wire)

    return await trio.to_thread.run_sync(encode)


async def _build_call(call: Awaitable[Any]) -> Any:
    try:
        return await call
    except UnknownBuild as exc:
        raise HttpError(404, "no_such_build", str(exc)) from None
    except QuotaExceeded as exc:
        raise HttpError(507, "no_space", str(exc)) from None
    except BuildError as exc:
        raise HttpError(400, "bad_build", str(exc)) from None


def _cid_param(request: Request) -> str:
    try:
        return check_cid(request.params["cid"])
    except BuildError as exc:
        raise HttpError(400, "bad_build", str(exc)) from None


async def _builds_list(node: Node, request: Request) -> Response:
    store = node.builds.builds
    infos = await node.call(store.list)
    used = await node.call(store.used_bytes)
    return Response.json(
        200,
        {
            "builds": [i.to_dict() for i in infos],
            "used_bytes": used,
            "quota_bytes": store.quota_bytes,
        },
    )


async def _builds_add(node: Node, request: Request) -> Response:
    body = _body_object(request, "path")
    path = body["path"]
    if not isinstance(path, str) or not path.startswith("/") or len(path) > 4096:
        raise HttpError(400, "bad_body", 'expected {"path": "/absolute/path/to/build.wasm"}')
    pinned = body.get("pin", True) is not False
    info = await _build_call(node.builds.add_file(Path(path), pinned))
    node.control.record("builds.added", {"cid": info.cid, "size": info.size})
    return Response.json(200, info.to_dict())


async def _builds_fetch(node: Node, request: Request) -> Response:
    body = _body_object(request, "cid")
    if not isinstance(body["cid"], str):
        raise HttpError(400, "bad_body", 'expected {"cid": "bld-...", "peers": [...]}')
    peers = body.get("peers")
    if peers is not None:
        if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers[:16]):
            raise HttpError(400, "bad_body", "peers is a list of multiaddrs or peer ids")
        peers = [await _reach(node, p) for p in peers[:16]]
    state = await _build_call(_started(node, body["cid"], peers, body.get("pin") is True))
    return Response.json(202, state.to_dict())


async def _started(node: Node, cid: str, peers: list[str] | None, pin: bool) -> Any:
    return node.builds.start_fetch(cid, peers, pin)


async def _builds_progress(node: Node, request: Request) -> Response:
    cid = _cid_param(request)
    state = node.builds.fetches.get(cid)
    info = await node.call(node.builds.builds.info, cid)
    if state is None and info is None:
        raise HttpError(404, "no_such_build", f"no build {cid} here and no fetch of it")
    return Response.json(
        200,
        {
            "fetch": state.to_dict() if state else None,
            "build": info.to_dict() if info else None,
        },
    )


async def _builds_pin(node: Node, request: Request) -> Response:
    cid = _cid_param(request)
    await _build_call(node.call(node.builds.builds.pin, cid, True))
    return Response.json(200, {"cid": cid, "pinned": True})


async def _builds_unpin(node: Node, request: Request) -> Response:
    cid = _cid_param(request)
    await _build_call(node.call(node.builds.builds.pin, cid, False))
    return Response.json(200, {"cid": cid, "pinned": False})


async def _builds_verify(node: Node, request: Request) -> Response:
    cid = _cid_param(request)
    bad = await _build_call(node.call(node.builds.builds.verify, cid))
    return Response.json(200, {"cid": cid, "damaged_chunks": bad})


async def _builds_gc(node: Node, request: Request) -> Response:
    removed = await node.call(node.builds.builds.gc, node.builds.keep())
    return Response.json(200, {"removed": removed})


def _agent_param(agent: Any) -> str:
    if not isinstance(agent, str) or agent.count("/") != 1 or len(agent) > 120:
        raise HttpError(400, "bad_agent", "agent is PUBLISHER/NAME")
    return agent


async def _providers(node: Node, request: Request) -> Response:
    agent = _agent_param(request.query.get("agent", ""))
    return Response.json(200, {"agent": agent, "providers": node.tasks.providers(agent)})


def _receipt_json(receipt: Receipt) -> dict[str, Any]:
    return {
        key: (value.hex() if isinstance(value, bytes) else value)
        for key, value in receipt.body().items()
    }


async def _tasks_run(node: Node, request: Request) -> Response:
    body = _body_object(request, "agent")
    agent, version = _agent_param(body["agent"]), body.get("version", "*")
    if not isinstance(version, str) or len(version) > 64:
        raise HttpError(400, "bad_body", "version is a semver range such as ^1.0.0")
    stdin = _base64_field(body, "input")
    max_price = body.get("max_price")
    if max_price is not None and not (
        type(max_price) is int and 0 <= max_price <= 10**15  # bool is not a price
    ):
        raise HttpError(400, "bad_body", "max_price is a whole number of lamports, 0 or more")
    provider = body.get("provider")
    if provider is not None:
        if not isinstance(provider, str):
            raise HttpError(400, "bad_body", "provider is a peer id or a multiaddr")
        provider = await _reach(node, provider)
    try:
        done = await node.tasks.run_task(agent, version, stdin, provider, max_price)
    except UnknownAgent as exc:
        raise HttpError(404, "unknown_agent", str(exc)) from None
    except TaskRefused as exc:
        raise HttpError(400, "task_refused", str(exc)) from None
    except TaskError as exc:
        raise HttpError(502, "task_failed", str(exc)) from None
    receipt = done["receipt"]
    node.control.record(
        "task.completed",
        {"agent": agent, "provider": done["provider"], "task": done["task"]},
    )
    return Response.json(
        200,
        {
            "task": done["task"],
            "output": base64.b64encode(done["output"]).decode(),
            "provider": done["provider"],
            "receipt": _receipt_json(receipt),
            "verified": done["verified"],
            "attempts": done["attempts"],
        },
    )


def _task_json(record: TaskRecord, full: bool) -> dict[str, Any]:
    out = dataclasses.asdict(record)
    signed = out.pop("receipt")
    if full and signed is not None:
        try:  # checked again: the file could have been tampered with
            out["receipt"] = _receipt_json(Receipt.verify(signed))
        except BadReceipt as exc:
            out["receipt_error"] = str(exc)
        out["receipt_signed"] = base64.b64encode(signed).decode()
    return out


async def _tasks_list(node: Node, request: Request) -> Response:
    role = request.query.get("role") or None
    if role not in (None, "user", "provider"):
        raise HttpError(400, "bad_query", "role is user or provider")
    limit = _int_param(request, "limit", 50, 1, 10_000)
    records = await node.tasks.tasklog.list(limit, role)
    return Response.json(200, {"tasks": [_task_json(r, full=False) for r in records]})


async def _tasks_show(node: Node, request: Request) -> Response:
    task_id = request.params["id"].lower()
    if len(task_id) != 32 or any(c not in "0123456789abcdef" for c in task_id):
        raise HttpError(400, "bad_task", "a task id is 32 hex digits (see `mercato tasks ls`)")
    records = await node.tasks.tasklog.get(task_id)
    if not records:
        raise HttpError(404, "unknown_task", f"this node has no task {task_id}")
    return Response.json(200, {"task": task_id, "sides": [_task_json(r, True) for r in records]})


async def _wallet(node: Node, request: Request) -> Response:
    return Response.json(200, await _settlement_call(node.settlement.wallet_info()))


async def _channels(node: Node, request: Request) -> Response:
    return Response.json(200, {"channels": node.settlement.channels()})


MAX_AIRDROP_LAMPORTS = 1_000 * 10**9


async def _settlement_call(call: Awaitable[Any]) -> Any:
    """Map settlement's errors to answers that say what to do."""
    try:
        return await call
    except LockupInForce as exc:
        raise HttpError(409, "lockup_in_force", str(exc)) from None
    except LedgerUnreachable as exc:
        raise HttpError(503, "ledger_unreachable", str(exc)) from None
    except LedgerError as exc:
        raise HttpError(502, "ledger_refused", str(exc)) from None
    except ChannelError as exc:
        raise HttpError(409, "bad_channel", str(exc)) from None


def _lamports(body: dict[str, Any], name: str, low: int, high: int) -> int:
    value = body.get(name)
    if type(value) is not int or not low <= value <= high:
        raise HttpError(400, "bad_body", f"{name} must be a whole number from {low} to {high}")
    return value


def _channel_of(node: Node, request: Request) -> str:
    stake = request.params["id"]
    if stake not in node.settlement.book.channels:
        raise HttpError(404, "no_such_channel", f"no channel {stake} in this node's book")
    return stake


async def _wallet_airdrop(node: Node, request: Request) -> Response:
    lamports = _lamports(_body_object(request, "lamports"), "lamports", 1, MAX_AIRDROP_LAMPORTS)
    signature = await _settlement_call(node.settlement.airdrop(lamports))
    wallet = await _settlement_call(node.settlement.wallet_info())
    return Response.json(200, {"signature": signature, **wallet})


async def _channel_open(node: Node, request: Request) -> Response:
    body = _body_object(request, "peer", "deposit_lamports", "duration_s")
    peer = body["peer"]
    try:
        public_key_of_peer(peer)
    except Exception:  # whatever a string that is no peer id makes it raise
        raise HttpError(400, "bad_body", "peer must be a peer id (12D3KooW...)") from None
    deposit = _lamports(body, "deposit_lamports", 1, 10**15)
    duration = _lamports(body, "duration_s", 600, 366 * 86_400)
    advertised = node.tasks.cards.wallet_of(peer)
    payee = body.get("payee") or advertised
    if advertised and payee != advertised:
        raise HttpError(
            409, "bad_channel", f"{peer}'s agent card names wallet {advertised}, not {payee}"
        )
    if not payee:
        raise HttpError(
            404,
            "no_wallet",
            f"{peer} has no live agent card naming its wallet: give its address as payee",
        )
    try:
        payee_key = Pubkey.from_string(payee)
    except (TypeError, ValueError):
        raise HttpError(400, "bad_body", "payee must be a base58 Solana address") from None
    channel = await _settlement_call(
        node.settlement.open_channel(peer, payee_key, deposit, duration)
    )
    return Response.json(201, channel_info(channel))


async def _channel_show(node: Node, request: Request) -> Response:
    return Response.json(200, channel_info(node.settlement.book.get(_channel_of(node, request))))


async def _channel_close(node: Node, request: Request) -> Response:
    stake = _channel_of(node, request)
    channel, signature = await _settlement_call(node.settlement.close_channel(stake))
    return Response.json(200, {**channel_info(channel), "signature": signature})


async def _channel_refund(node: Node, request: Request) -> Response:
    stake = _channel_of(node, request)
    channel, signature = await _settlement_call(node.settlement.refund_channel(stake))
    return Response.json(200, {**channel_info(channel), "signature": signature})


async def _metrics(node: Node, request: Request) -> Response:
    body = await trio.to_thread.run_sync(node.metrics.render)  # reads /proc
    return Response(200, body, "text/plain; version=0.0.4; charset=utf-8")


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/v1/health",
        "Liveness: answers without a token.",
        _health,
        auth=False,
        response={
            "type": "object",
            "properties": {
                "status": {"type": "string"},
                "version": {"type": "string"},
                "instance": {"type": "string"},
            },
        },
    ),
    Route(
        "GET",
        "/openapi.json",
        "This OpenAPI document.",
        _openapi,
        auth=False,
        response={"type": "object"},
    ),
    Route(
        "GET",
        "/v1/status",
        "The node's identity, services, addresses and counters.",
        _status,
        response={"type": "object"},
    ),
    Route(
        "POST",
        "/v1/shutdown",
        "Stop the daemon cleanly.",
        _shutdown,
        response={"type": "object", "properties": {"status": {"type": "string"}}},
    ),
    Route(
        "GET",
        "/v1/keys",
        "The node key and every account key (public parts only).",
        _keys_list,
        response={
            "type": "object",
            "properties": {"keys": {"type": "array", "items": _KEY_SCHEMA}},
        },
    ),
    Route(
        "POST",
        "/v1/keys",
        "Create a new account key.",
        _keys_new,
        response=_KEY_SCHEMA,
        body={
            "type": "object",
            "properties": {"name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,31}$"}},
            "required": ["name"],
        },
        errors=(400, 404, 409),
    ),
    Route(
        "GET",
        "/v1/keys/{name}",
        "One key ('node' or an account name).",
        _keys_show,
        response=_KEY_SCHEMA,
        errors=(404,),
    ),
    Route(
        "GET",
        "/v1/events",
        "Event log entries after a sequence number, oldest first.",
        _events,
        response={
            "type": "object",
            "properties": {
                "events": {"type": "array", "items": _EVENT_SCHEMA},
                "next": {"type": "integer"},
            },
        },
        query=(
            ("after", "integer", "return entries with seq > after"),
            ("limit", "integer", "at most this many (1-1000, default 100)"),
            ("kind", "string", "only entries of this kind"),
        ),
        errors=(400,),
    ),
    Route(
        "GET",
        "/v1/events/verify",
        "Check the event log's hash chain.",
        _events_verify,
        response={
            "type": "object",
            "properties": {
                "ok": {"type": "boolean"},
                "checked": {"type": "integer"},
                "head": {"type": ["string", "null"]},
                "first_bad": {"type": ["integer", "null"]},
                "reason": {"type": ["string", "null"]},
            },
        },
    ),
    Route(
        "POST",
        "/v1/registry/publish",
        "Create or update a listing, signed by one of this node's account keys.",
        _publish,
        response={"type": "object"},
        body={
            "type": "object",
            "properties": {"account": {"type": "string"}, "listing": {"type": "object"}},
            "required": ["listing"],
        },
        errors=(400, 404),
    ),
    Route(
        "POST",
        "/v1/registry/release",
        "Bind name@version of a listing to a build (cid, size, dependencies).",
        _release,
        response={"type": "object"},
        body={
            "type": "object",
            "properties": {"account": {"type": "string"}, "release": {"type": "object"}},
            "required": ["release"],
        },
        errors=(400, 404),
    ),
    Route(
        "POST",
        "/v1/registry/deprecate",
        "Mark a listing deprecated (it leaves search results).",
        _deprecate,
        response={"type": "object"},
        body={
            "type": "object",
            "properties": {"account": {"type": "string"}, "name": {"type": "string"}},
            "required": ["name"],
        },
        errors=(400, 404),
    ),
    Route(
        "GET",
        "/v1/registry/search",
        "Search listings: text, filters, sort, cursor pagination.",
        _search,
        response={
            "type": "object",
            "properties": {"results": {"type": "array"}, "cursor": {"type": ["string", "null"]}},
        },
        query=(
            ("text", "string", "words, each matched as a prefix"),
            ("kind", "string", "agent or model"),
            ("capability", "string", ""),
            ("tag", "string", ""),
            ("max_price", "integer", "lamports"),
            ("publisher", "string", ""),
            ("sort", "string", "relevance, price or newest"),
            ("limit", "integer", "1-100"),
            ("cursor", "string", "from the last page"),
            ("peer", "string", "ask this peer (peer id or multiaddr) instead of this node"),
        ),
        errors=(400, 502),
    ),
    Route(
        "GET",
        "/v1/registry/resolve",
        "Releases of a listing within a version range, with every dependency resolved.",
        _resolve,
        response={
            "type": "object",
            "properties": {
                "candidates": {"type": "array", "items": {"type": "string"}},
                "plan": {"type": "object"},
            },
        },
        query=(
            ("ref", "string", "PUBLISHER/NAME"),
            ("range", "string", "a semver range such as ^1.2.0 (default *)"),
        ),
        errors=(400, 404, 409),
    ),
    Route(
        "GET",
        "/v1/registry/listings/{publisher}/{name}",
        "One listing with its releases (from a peer: its signed feed, verified here).",
        _show,
        response={"type": "object"},
        query=(("peer", "string", "ask this peer (peer id or multiaddr) instead of this node"),),
        errors=(404, 502),
    ),
    Route(
        "POST",
        "/v1/runtime/run",
        "Run a WebAssembly build once in the sandbox (a worker process) and return the outcome.",
        _runtime_run,
        body={
            "type": "object",
            "properties": {
                "wasm": {"type": "string", "description": "the module, base64"},
                "input": {"type": "string", "description": "stdin, base64"},
                "limits": {
                    "type": "object",
                    "description": "fuel, timeout_s, memory_mb, max_input_bytes, "
                    "max_output_bytes, table_elements",
                },
            },
            "required": ["wasm"],
        },
        response={
            "type": "object",
            "properties": {
                "outcome": {"type": "string"},
                "output": {"type": "string", "description": "stdout, base64"},
                "usage": {"type": "object"},
            },
        },
        errors=(400, 413, 503),
    ),
    Route(
        "GET",
        "/v1/builds",
        "Builds stored on this node, and the store's use of its quota.",
        _builds_list,
        response={"type": "object"},
    ),
    Route(
        "POST",
        "/v1/builds/add",
        "Store a local file as a build (pinned unless pin is false).",
        _builds_add,
        body={
            "type": "object",
            "properties": {"path": {"type": "string"}, "pin": {"type": "boolean"}},
        },
        response={"type": "object"},
        errors=(400, 507),
    ),
    Route(
        "POST",
        "/v1/builds/fetch",
        "Start fetching a build from peers (all connected ones, or those given).",
        _builds_fetch,
        body={
            "type": "object",
            "properties": {
                "cid": {"type": "string"},
                "peers": {"type": "array", "items": {"type": "string"}},
                "pin": {"type": "boolean"},
            },
        },
        response={"type": "object"},
        errors=(400, 502, 507),
    ),
    Route(
        "GET",
        "/v1/builds/{cid}",
        "A build's record and the progress of its fetch.",
        _builds_progress,
        response={"type": "object"},
        errors=(400, 404),
    ),
    Route(
        "POST",
        "/v1/builds/{cid}/pin",
        "Keep a build whatever gc does.",
        _builds_pin,
        response={"type": "object"},
        errors=(400, 404),
    ),
    Route(
        "POST",
        "/v1/builds/{cid}/unpin",
        "Let gc remove a build.",
        _builds_unpin,
        response={"type": "object"},
        errors=(400, 404),
    ),
    Route(
        "POST",
        "/v1/builds/{cid}/verify",
        "Hash a build's chunks again; forget damaged ones.",
        _builds_verify,
        response={"type": "object"},
        errors=(400, 404),
    ),
    Route(
        "POST",
        "/v1/builds/gc",
        "Remove every build that is not pinned.",
        _builds_gc,
        response={"type": "object"},
    ),
    Route(
        "GET",
        "/v1/providers",
        "Providers whose live agent card serves an agent, cheapest and least loaded first.",
        _providers,
        response={"type": "object"},
        query=(("agent", "string", "PUBLISHER/NAME"),),
        errors=(400,),
    ),
    Route(
        "POST",
        "/v1/tasks/run",
        "Run an agent on the best provider that quotes (or the one given), retrying "
        "on failure; the receipt and output are verified here.",
        _tasks_run,
        body={
            "type": "object",
            "properties": {
                "agent": {"type": "string", "description": "PUBLISHER/NAME"},
                "version": {"type": "string", "description": "a semver range (default *)"},
                "input": {"type": "string", "description": "base64"},
                "provider": {"type": "string", "description": "peer id or multiaddr"},
                "max_price": {
                    "type": "integer",
                    "description": "lamports a task at most (default: the listing's price)",
                },
            },
            "required": ["agent"],
        },
        response={"type": "object"},
        errors=(400, 404, 502),
    ),
    Route(
        "GET",
        "/v1/tasks",
        "Tasks this node ran for others or asked others to run, newest first.",
        _tasks_list,
        response={"type": "object"},
        query=(
            ("role", "string", "user or provider (default both)"),
            ("limit", "integer", "at most this many (default 50)"),
        ),
        errors=(400,),
    ),
    Route(
        "GET",
        "/v1/tasks/{id}",
        "One task: each side this node saw, with its receipt and failed attempts.",
        _tasks_show,
        response={"type": "object"},
        errors=(400, 404),
    ),
    Route(
        "GET",
        "/v1/wallet",
        "This node's wallet: its Solana address, balance and ledger.",
        _wallet,
        response={"type": "object"},
    ),
    Route(
        "POST",
        "/v1/wallet/airdrop",
        'Lamports from the ledger\'s faucet (embedded and localnet): {"lamports": N}.',
        _wallet_airdrop,
        response={"type": "object"},
        errors=(400, 502, 503),
    ),
    Route(
        "GET",
        "/v1/channels",
        "Payment channels this node pays on or is paid on.",
        _channels,
        response={"type": "object"},
    ),
    Route(
        "POST",
        "/v1/channels",
        "Open a channel to a peer by hand: "
        '{"peer", "deposit_lamports", "duration_s", "payee" (optional: else its card\'s)}.',
        _channel_open,
        response={"type": "object"},
        errors=(400, 404, 409, 502, 503),
    ),
    Route(
        "GET",
        "/v1/channels/{id}",
        "One channel by its stake account: terms, amounts owed and used, status.",
        _channel_show,
        response={"type": "object"},
        errors=(404,),
    ),
    Route(
        "POST",
        "/v1/channels/{id}/close",
        "Close a channel this node is paid on, now, with the latest state (the payee).",
        _channel_close,
        response={"type": "object"},
        errors=(404, 409, 502, 503),
    ),
    Route(
        "POST",
        "/v1/channels/{id}/refund",
        "Take back what a channel this node paid on holds, after its lockup (the payer).",
        _channel_refund,
        response={"type": "object"},
        errors=(404, 409, 502, 503),
    ),
    Route(
        "GET",
        "/v1/peers",
        "Connected peers with their addresses and protocols, and banned peers.",
        _peers,
        response={
            "type": "object",
            "properties": {
                "peers": {"type": "array", "items": {"type": "object"}},
                "banned": {"type": "array", "items": {"type": "string"}},
            },
        },
    ),
    Route(
        "POST",
        "/v1/peers/connect",
        "Dial a peer by multiaddr.",
        _connect,
        response={"type": "object", "properties": {"peer_id": {"type": "string"}}},
        body=_PEER_BODY,
        errors=(400, 502),
    ),
    Route(
        "POST",
        "/v1/ping",
        "Ping a peer (by peer id, or by multiaddr, dialing it first).",
        _ping,
        response={
            "type": "object",
            "properties": {
                "peer_id": {"type": "string"},
                "rtt_ms": {"type": "array", "items": {"type": "number"}},
            },
        },
        body=_PEER_BODY,
        errors=(400, 502),
    ),
    Route(
        "GET", "/metrics", "Prometheus metrics (text exposition format).", _metrics, response=None
    ),
)


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": route.summary, "responses": {}}
    ok = {"/v1/keys": "201", "/v1/shutdown": "202"}.get(route.path, "200")
    if route.response is not None:
        op["responses"][ok] = {
            "description": "OK",
            "content": {"application/json": {"schema": route.response}},
        }
    else:
        op["responses"][ok] = {
            "description": "OK",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    error = {"content": {"application/json": {"schema": _ERROR_SCHEMA}}}
    codes = set(route.errors) | {413}
    if route.auth:
        codes.add(401)
    for code in sorted(codes):
        op["responses"][str(code)] = {"description": _REASONS.get(code, "Error"), **error}
    if not route.auth:
        op["security"] = []
    if route.body:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": route.body}},
        }
    params = [
        {"name": n, "in": "query", "required": False, "schema": {"type": t}, "description": d}
        for n, t, d in route.query
    ]
    params += [
        {"name": seg[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
        for seg in route.path.split("/")
        if seg.startswith("{")
    ]
    if params:
        op["parameters"] = params
    return op


_REASONS = {
    502: "The peer could not be reached",
    400: "Bad request",
    401: "Missing or wrong token",
    404: "Not found",
    409: "Already exists",
    413: "Request body too large",
}


def openapi_document(server_url: str = "http://127.0.0.1:7311") -> dict[str, Any]:
    """The OpenAPI 3.1 description of every route."""
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "mercato control API", "version": __version__},
        "servers": [{"url": server_url}],
        "components": {"securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}},
        "security": [{"token": []}],
        "paths": paths,
    }


class ControlAPI:
    """Dispatches requests to the route table on behalf of one `Node`."""

    def __init__(self, node: Node, token: str) -> None:
        self._node = node
        self._token = token.encode()

    def _authorized(self, request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self._token
        )

    def _route(self, request: Request) -> Route:
        allowed = False
        for route in ROUTES:
            params = route.match(request.method, request.path)
            if params is not None:
                request.params = params
                return route
            allowed = allowed or route.match(route.method, request.path) is not None
        if allowed:
            raise HttpError(
                405, "method_not_allowed", f"{request.method} is not allowed on {request.path}"
            )
        raise HttpError(404, "not_found", f"no route {request.path}; see /openapi.json")

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        label = "unmatched"
        try:
            route = self._route(request)
            label = route.path
            if route.auth and not self._authorized(request):
                raise HttpError(
                    401,
                    "unauthorized",
                    "missing or wrong API token: send 'Authorization: Bearer <token>' "
                    "with the token from <data dir>/api.token",
                )
            response = await route.handler(self._node, request)
        except HttpError as exc:
            response = Response.error(exc.status, exc.code, exc.message)
        except NotServed as exc:
            response = Response.error(409, "not_served", str(exc))
        except Exception:
            log.exception("control API handler failed", extra={"route": label})
            response = Response.error(500, "internal", "internal error; see the daemon's log")
        log.debug(
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )
        metrics = self._node.metrics
        metrics.api_requests.labels(route=label, status=str(response.status)).inc()
        metrics.api_seconds.labels(route=label).observe(time.perf_counter() - started)
        return response
