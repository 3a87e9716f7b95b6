"""The gateway over HTTP: its own listener, its two routes, its limits, x402's headers.

`Gateway` is a listener of its own (`HttpListener`: Hypercorn's trio worker on
``[gateway] listen``), never the control API's: nothing of ``/v1``, ``/mcp``,
``/docs`` or the web app answers here. `GatewayApp` is plain ASGI:

- ``GET /x402/v2/agents``: what this node serves, with x402 prices;
- ``POST /x402/v2/run/{publisher}/{name}``, the input as the raw body: 402 with
  ``PAYMENT-REQUIRED`` without a payment; with ``PAYMENT-SIGNATURE``, the run's
  output and receipt and ``PAYMENT-RESPONSE`` (see `GatewayService.call`).

Limits, checked before anything else: ``rate_per_min`` requests a minute per
client IP (an IPv6 client by its /64), as a token bucket of as many
(429 with Retry-After beyond it); a connection with no whole request head
within ``HEADER_TIMEOUT_S`` is dropped (the listener's); a body over
``max_body_mb`` is 413, one that takes over ``BODY_TIMEOUT_S`` to arrive 408,
and bodies held at once (read, or being run on) are ``BODY_BUDGET_MB`` in all
(at least two of the largest), beyond which a call is 503. A call without
payment to a paid agent (402) or one not served here (404) is answered from
its head, its body never read; a client gone before its whole body came is
not run for.
Every refusal is x402's error shape: ``{x402Version, error, message}``, and a
402 also carries the requirements (``resource``, ``accepts``) in its body and
its ``PAYMENT-REQUIRED`` header, so a client can pay at once.
CORS is open (no cookie or credential is ever used here), and the x402
headers are exposed to browsers.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import math
import time
from typing import Any

import trio

from .._config import GatewaySection, split_host_port
from .._metrics import NodeMetrics
from .._server import HttpListener
from ..tasks import Receipt
from ._messages import (
    PAYMENT_REQUIRED,
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    SETTLEMENT_PENDING,
    TRANSACTION_FAILED,
    X402_VERSION,
    GatewayRefused,
    encode_header,
    payment_required,
    resource,
    settle_response,
)
from ._service import GatewayService, Paid, Priced

log = logging.getLogger("mercato.gateway")

AGENTS_PATH = "/x402/v2/agents"
RUN_PREFIX = "/x402/v2/run/"
HEADER_TIMEOUT_S = 5.0
BODY_TIMEOUT_S = 10.0
GRACE_S = 3.0
BODY_BUDGET_MB = 64
MAX_CLIENTS = 65_536
"""Clients the rate limiter remembers; beyond it, the full buckets are forgotten."""
_DRAIN_TIMES = 2  # times max_body read and dropped after a 413, so the client sees it
_DRAIN_S = 1.0
SMALL_BODY = 64 * 1024  # an unpaid call's body up to this is read, so keep-alive holds
_CORS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-expose-headers", b"PAYMENT-REQUIRED, PAYMENT-RESPONSE"),
]
Headers = list[tuple[bytes, bytes]]


class RateLimit:
    """A token bucket per client: ``per_min`` requests at once, refilled at
    ``per_min`` a minute."""

    def __init__(self, per_min: int) -> None:
        self.capacity = float(per_min)
        self.rate = per_min / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, client: str, now: float) -> float:
        """0 if ``client`` may make a request now (one token taken), else the
        seconds until it may."""
        tokens, last = self._buckets.get(client, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._buckets[client] = (tokens, now)
            return (1 - tokens) / self.rate
        if client not in self._buckets and len(self._buckets) >= MAX_CLIENTS:
            self._forget(now)
        self._buckets[client] = (tokens - 1, now)
        return 0.0

    def _forget(self, now: float) -> None:
        """Drop the clients whose bucket has refilled (they lose nothing)."""
        full = [
            c
            for c, (tokens, last) in self._buckets.items()
            if tokens + (now - last) * self.rate >= self.capacity
        ]
        for client in full or list(self._buckets)[: MAX_CLIENTS // 2]:
            del self._buckets[client]


def client_key(scope: dict[str, Any]) -> str:
    """Who a request counts against: its IP (an IPv6 address by its /64)."""
    client = scope.get("client")
    host = client[0] if client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class _TooLarge(Exception):
    pass


class _Busy(Exception):
    """The bodies held at once are over the budget."""


class _Gone(Exception):
    """The client went away before its whole body came."""


class BodyBudget:
    """Bytes of request bodies held at once, across every request."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held -= size


class GatewayApp:
    """The gateway's ASGI app; `service` is set once the node's services run."""

    def __init__(
        self,
        config: GatewaySection,
        metrics: NodeMetrics | None = None,
        body_timeout: float = BODY_TIMEOUT_S,
        body_budget: int = BODY_BUDGET_MB * 1024 * 1024,
    ) -> None:
        self.service: GatewayService | None = None
        self._body_timeout = body_timeout
        self._max_body = config.max_body_mb * 1024 * 1024
        self._bodies = BodyBudget(max(body_budget, 2 * self._max_body))
        self._limit = RateLimit(config.rate_per_min)
        self._metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # no websockets here: the server refuses the upgrade
        status = {"code": 500}

        async def counted(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self._answer(scope, receive, counted)
        finally:
            if self._metrics is not None:
                self._metrics.gateway_requests.labels(
                    route=_route_label(scope["path"]), status=str(status["code"])
                ).inc()

    async def _answer(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        wait = self._limit.take(client_key(scope), time.monotonic())
        if wait:
            retry = max(1, math.ceil(wait))
            refused = GatewayRefused(
                429, "rate_limited", f"too many requests from your address: retry in {retry} s"
            )
            await _error(send, refused, close=True, retry_after=retry)
            return
        method, path = scope["method"], scope["path"]
        if method == "OPTIONS" and (path == AGENTS_PATH or path.startswith(RUN_PREFIX)):
            await _send(send, 204, b"", _preflight())
            return
        if path == AGENTS_PATH:
            if method != "GET":
                await _not_allowed(send, "GET")
                return
            await self._agents(scope, send)
            return
        agent = _agent_of(path)
        if agent is None:
            refused = GatewayRefused(404, "not_found", f"nothing here: see GET {AGENTS_PATH}")
            await _error(send, refused)
            return
        if method != "POST":
            await _not_allowed(send, "POST")
            return
        await self._run(scope, receive, send, agent)

    async def _agents(self, scope: dict[str, Any], send: Any) -> None:
        service = self.service
        try:
            if service is None:
                raise GatewayRefused(503, "unavailable", "the node is starting: retry", 1)
            agents = await service.agents()
        except GatewayRefused as exc:
            await _error(send, exc)
            return
        body = {"x402Version": X402_VERSION, "network": service.network, "agents": agents}
        for agent in agents:
            agent["url"] = _url(scope, agent["path"])
        await _json(send, 200, body, [])

    async def _run(self, scope: dict[str, Any], receive: Any, send: Any, agent: str) -> None:
        payment = _header(scope, PAYMENT_SIGNATURE_HEADER)
        url = _url(scope, scope["path"])
        if payment is None:  # 402 or 404 from the head: no large body read for them
            try:
                await self._unpaid(agent)
            except GatewayRefused as exc:
                # A small body is read and dropped, so the connection stays usable for
                # the paid call that follows; a larger one is not read, and the answer
                # closes the connection (a client would send its next request on a
                # connection the server is closing).
                kept = await _drain_small(scope, receive)
                await self._refused(send, exc, agent, url, close=not kept)
                return
        held = [0]
        try:
            await self._call(scope, receive, send, agent, payment, url, held)
        finally:
            self._bodies.give(held[0])

    async def _unpaid(self, agent: str) -> None:
        """GatewayRefused for a call without payment that will not run: the node is
        starting, the agent is not served here, or it is paid."""
        service = self.service
        if service is None:
            raise GatewayRefused(503, "unavailable", "the node is starting: retry", 1)
        if (await service.priced(agent)).requirements is not None:
            raise GatewayRefused(402, PAYMENT_REQUIRED, "this agent is paid per call")

    async def _call(
        self,
        scope: dict[str, Any],
        receive: Any,
        send: Any,
        agent: str,
        payment: str | None,
        url: str,
        held: list[int],
    ) -> None:
        try:
            with trio.fail_after(self._body_timeout):
                stdin = await _read_body(scope, receive, self._max_body, self._bodies, held)
        except _Gone:
            return  # nobody to answer: nothing runs, nothing is paid
        except (_TooLarge, _Busy) as exc:
            await _drain(receive, _DRAIN_TIMES * self._max_body)
            limit = self._max_body // (1024 * 1024)
            refused = GatewayRefused(413, "body_too_large", f"inputs are limited to {limit} MiB")
            if isinstance(exc, _Busy):
                refused = GatewayRefused(
                    503, "busy", "the gateway holds too many inputs at once: retry", 1
                )
            await _error(send, refused, close=True, retry_after=refused.retry_after)
            return
        except trio.TooSlowError:
            refused = GatewayRefused(408, "timeout", "the request body took too long to arrive")
            await _error(send, refused, close=True)
            return
        service = self.service
        try:
            if service is None:
                raise GatewayRefused(503, "unavailable", "the node is starting: retry", 1)
            paid = await service.call(agent, payment, stdin)
        except GatewayRefused as exc:
            await self._refused(send, exc, agent, url)
            return
        status = 200 if paid.settled else 202  # 202: the ledger has not said yet
        await _json(send, status, _paid_body(paid, service.network), _paid_headers(paid, service))

    async def _refused(
        self, send: Any, exc: GatewayRefused, agent: str, url: str, close: bool = False
    ) -> None:
        """An error answer; a 402 (or any refusal of a served agent) names what to pay.
        ``close`` ends the connection after it."""
        body: dict[str, Any] = {
            "x402Version": X402_VERSION,
            "error": exc.reason,
            "message": str(exc),
        }
        headers: Headers = []
        service = self.service
        priced: Priced | None = None
        if service is not None and exc.status not in (404, 503):
            try:
                priced = await service.priced(agent)
            except GatewayRefused:
                priced = None
        if priced is not None and service is not None and priced.requirements is not None:
            listing = priced.offer.listing
            info = resource(url, f"{listing['title']}: {listing['summary']}")
            body = payment_required(exc.reason, info, await service.accepts(priced), str(exc))
            if exc.status == 402:
                headers.append((PAYMENT_REQUIRED_HEADER.encode(), encode_header(body).encode()))
        if exc.run is not None:
            body["outcome"] = exc.run.result.outcome.value
            body["receipt"] = _receipt(exc.run.receipt, exc.run.signed)
        if exc.reason == TRANSACTION_FAILED and service is not None:
            answer = settle_response(False, "", service.network, "", exc.reason)
            headers.append((PAYMENT_RESPONSE_HEADER.encode(), encode_header(answer).encode()))
        if exc.retry_after:
            headers.append((b"retry-after", str(exc.retry_after).encode()))
        if close:
            headers.append((b"connection", b"close"))
        await _json(send, exc.status, body, headers)


def _agent_of(path: str) -> str | None:
    """``PUBLISHER/NAME`` of a run path, or None."""
    if not path.startswith(RUN_PREFIX):
        return None
    publisher, slash, name = path[len(RUN_PREFIX) :].partition("/")
    if not slash or not publisher or not name or "/" in name or len(path) > 512:
        return None
    return f"{publisher}/{name}"


def _route_label(path: str) -> str:
    if path == AGENTS_PATH:
        return "agents"
    return "run" if _agent_of(path) else "unmatched"


def _header(scope: dict[str, Any], name: str) -> str | None:
    wanted = name.encode()
    for key, value in scope["headers"]:
        if key.lower() == wanted:
            return value.decode("latin-1")
    return None


def _url(scope: dict[str, Any], path: str) -> str:
    host = _header(scope, "host")
    if not host:
        server = scope.get("server") or ("localhost", 80)
        host = f"[{server[0]}]:{server[1]}" if ":" in server[0] else f"{server[0]}:{server[1]}"
    return f"{scope.get('scheme', 'http')}://{host}{path}"


def _receipt(receipt: Receipt, signed: bytes) -> dict[str, Any]:
    fields = {k: v.hex() if isinstance(v, bytes) else v for k, v in receipt.body().items()}
    return {"signed": base64.b64encode(signed).decode(), **fields}


def _paid_body(paid: Paid, network: str) -> dict[str, Any]:
    payment = None
    if paid.transaction:
        payment = {
            "transaction": paid.transaction,
            "payer": paid.payer,
            "amount": str(paid.amount),
            "network": network,
            "settled": paid.settled,
        }
    receipt = paid.receipt
    if not paid.settled or receipt is None:  # no output until the ledger has the payment
        return {
            "x402Version": X402_VERSION,
            "error": SETTLEMENT_PENDING,
            "message": "the agent answered, but the ledger has not said yet whether the "
            "payment landed: send the same request with the same PAYMENT-SIGNATURE again "
            "for the answer once it has (or the reason it never landed)",
            "payment": payment,
        }
    output = paid.output
    try:
        text: str | None = output.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {
        "agent": receipt.agent,
        "version": receipt.version,
        "outcome": receipt.outcome,
        "output": {"text": text, "base64": base64.b64encode(output).decode()},
        "receipt": _receipt(receipt, paid.signed),
        "payment": payment,
    }


def _paid_headers(paid: Paid, service: GatewayService) -> Headers:
    if not paid.transaction:
        return []
    answer = settle_response(
        paid.settled,
        paid.transaction,
        service.network,
        paid.payer,
        "" if paid.settled else SETTLEMENT_PENDING,
    )
    return [(PAYMENT_RESPONSE_HEADER.encode(), encode_header(answer).encode())]


async def _read_body(
    scope: dict[str, Any], receive: Any, limit: int, budget: BodyBudget, held: list[int]
) -> bytes:
    """The whole body; each chunk taken from ``budget`` first (``held[0]``: what
    this request holds, for the caller to give back). _TooLarge, _Busy, or _Gone
    if the client went away before its end."""
    declared = _header(scope, "content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _Gone  # http.disconnect: what came is not the input
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        if not budget.take(len(chunk)):
            raise _Busy
        held[0] += len(chunk)
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _drain_small(scope: dict[str, Any], receive: Any) -> bool:
    """Read and drop a body of at most SMALL_BODY declared bytes; False (nothing
    read) for a larger or undeclared one, or one that does not come in time."""
    declared = _header(scope, "content-length")
    if declared is None or not declared.isdigit() or int(declared) > SMALL_BODY:
        return False
    with trio.move_on_after(_DRAIN_S):
        taken = 0
        while taken <= SMALL_BODY:
            message = await receive()
            if message["type"] != "http.request":
                return False
            taken += len(message.get("body", b""))
            if not message.get("more_body"):
                return True
    return False


async def _drain(receive: Any, limit: int) -> None:
    """Read (and drop) some of a refused body, so the client sees the answer
    rather than a reset."""
    with trio.move_on_after(_DRAIN_S):
        taken = 0
        while taken < limit:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                return
            taken += len(message.get("body", b""))


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _preflight() -> Headers:
    return [
        *_CORS,
        (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
        (b"access-control-allow-headers", b"Content-Type, PAYMENT-SIGNATURE"),
        (b"access-control-max-age", b"600"),
    ]


async def _not_allowed(send: Any, allowed: str) -> None:
    refused = GatewayRefused(405, "method_not_allowed", f"use {allowed}")
    await _error(send, refused, extra=[(b"allow", allowed.encode())])


async def _error(
    send: Any,
    refused: GatewayRefused,
    close: bool = False,
    retry_after: int = 0,
    extra: Headers | None = None,
) -> None:
    body = {"x402Version": X402_VERSION, "error": refused.reason, "message": str(refused)}
    headers = list(extra or [])
    if retry_after:
        headers.append((b"retry-after", str(retry_after).encode()))
    if close:
        headers.append((b"connection", b"close"))
    await _json(send, refused.status, body, headers)


async def _json(send: Any, status: int, body: dict[str, Any], headers: Headers) -> None:
    data = json.dumps(body, separators=(",", ":")).encode()
    extra = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
    await _send(send, status, data, [*extra, *headers])


async def _send(send: Any, status: int, body: bytes, headers: Headers) -> None:
    base = [*_CORS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*base, *headers]})
    await send({"type": "http.response.body", "body": body})


class Gateway:
    """The public gateway: a listener of its own on ``[gateway] listen``, its app,
    and (once `attach`\\ ed) the service behind it."""

    def __init__(self, config: GatewaySection, metrics: NodeMetrics | None = None) -> None:
        address = split_host_port(config.listen)
        assert address is not None, "checked with the configuration"
        self.app = GatewayApp(config, metrics)
        self._listener = HttpListener(
            self.app, address[0], address[1], header_timeout=HEADER_TIMEOUT_S, grace_s=GRACE_S
        )
        self.url = ""
        """``http://HOST:PORT`` once it serves."""

    def bind(self) -> tuple[str, int]:
        """Open the listening socket; OSError if the address is in use."""
        return self._listener.bind()

    def attach(self, service: GatewayService) -> None:
        self.app.service = service

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until `close` (then let calls in flight finish) or cancellation;
        reports the URL once it serves."""
        service = self.app.service
        assert service is not None, "attach the service first"
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            host, port = await nursery.start(self._serve, nursery.cancel_scope)
            self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
            log.info("the x402 gateway serves", extra={"url": self.url})
            task_status.started(self.url)

    async def _serve(
        self,
        done: trio.CancelScope,
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            await self._listener.serve(task_status=task_status)
        finally:
            done.cancel()  # the listener is closed: the service has nothing left to do

    def close(self) -> None:
        """Stop taking connections; calls in flight get ``GRACE_S`` to be answered."""
        self._listener.close()
