"""The provider's side of models: serve ``[models]`` engines on ``/mercato/infer/1.0.0``.

For each ``[models]`` entry the service checks its engine every
``health_interval_s`` and offers the model in this node's agent card only
while the engine answers and the registry holds its listing (a model listing,
not deprecated); a change is announced at once. The offer carries the prices
(the entry's, else the listing's), the listing's context length, the output
tokens per second measured over recent calls, and the calls running or
waiting.

A call (`_answer`) is refused before anything reaches the engine when: the
model is not served or its engine is down (``not_served``, ``unavailable``),
the prices accepted are lower than this node's (``over_price``), the body is
malformed or asks more output than the context (``bad_request``,
``context_length_exceeded``), the user still owes this node a call
(``unpaid``), the channel shown cannot cover the call's most
(``payment_required``, ``bad_payment``, ``channel_short``), or too many calls
wait (``busy``). Then the engine's chunks are passed on as they come; the
receipt counts the engine's own ``usage`` (the model's tokenizer). If the
engine breaks off, the receipt counts the output tokens delivered (one per
``logprobs`` entry) and no input, and says ``failed``. A user whose node
closes the stream before the receipt (its client went away) stops the engine
and owes nothing: that is the provider's risk. A priced call is owed from the
moment its receipt is sent until the user's `InferPay` is kept; the debt is
held in memory (a restart forgets it).
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio
from solders.pubkey import Pubkey

from mercato.p2p import Exchange, Keypair, Overlay, Refused, RequestFailed
from mercato.settlement import PaymentShort, SettlementError

from .._config import ServedModel
from ..money import SettlementService
from ..registry import RegistryService
from ..tasks import ModelOffer, TaskLog, TaskRecord, TaskService
from ._backend import Engine, EngineDown, EngineRefused
from ._messages import (
    INFER,
    InferChunk,
    InferEnd,
    InferPaid,
    InferPay,
    InferReceipt,
    InferRequest,
    StreamHash,
    cost,
    request_hash,
)
from ._openai import engine_body, parse_chat, tokens_listed

if TYPE_CHECKING:
    from mercato.settlement import Channel

log = logging.getLogger("mercato.models")

PAY_WAIT_S = 30.0
LISTING_CHECK_S = 1.0
QUEUE_PER_SLOT = 4  # calls that may wait for each of an engine's slots
SPEED_ALPHA = 0.3


@dataclass
class _Served:
    """One ``[models]`` entry as this node serves it now."""

    config: ServedModel
    engine: Engine
    slots: trio.Semaphore
    healthy: bool = False
    listing: dict[str, Any] | None = None
    running: int = 0
    waiting: int = 0
    tokens_per_s: float = 0.0

    @property
    def ref(self) -> str:
        return self.config.listing

    def prices(self) -> tuple[int, int]:
        spec = (self.listing or {}).get("model") or {}
        input_price = self.config.input_price
        output_price = self.config.output_price
        return (
            int(spec.get("input_price", 0)) if input_price is None else input_price,
            int(spec.get("output_price", 0)) if output_price is None else output_price,
        )

    @property
    def context_length(self) -> int:
        return int(((self.listing or {}).get("model") or {}).get("context_length", 1))

    def offer(self) -> ModelOffer | None:
        if not self.healthy or self.listing is None:
            return None
        input_price, output_price = self.prices()
        return ModelOffer(
            model=self.ref,
            input_price=input_price,
            output_price=output_price,
            context_length=self.context_length,
            tokens_per_s=round(self.tokens_per_s, 1),
            queue=self.running + self.waiting,
        )


@dataclass
class _Call:
    """What a call has streamed so far."""

    hash: StreamHash = field(default_factory=StreamHash)
    listed: int = 0
    usage: dict[str, Any] | None = None
    first_at: float | None = None
    error: str = ""


class ModelService:
    """Serves the ``[models]`` engines to the network (see the module docstring)."""

    def __init__(
        self,
        node_key: Keypair,
        overlay: Overlay,
        registry: RegistryService,
        money: SettlementService,
        tasks: TaskService,
        tasklog: TaskLog,
        served: tuple[ServedModel, ...],
    ) -> None:
        self._key = node_key
        self._overlay = overlay
        self._registry = registry
        self._money = money
        self._tasks = tasks
        self._tasklog = tasklog
        self._served = {
            s.listing: _Served(s, Engine(s), trio.Semaphore(s.concurrency)) for s in served
        }
        self._unpaid: dict[str, int] = {}  # user peer -> lamports of a call not paid yet
        self.served_calls = 0

    @property
    def serving(self) -> tuple[str, ...]:
        return tuple(self._served)

    def offers(self) -> list[dict[str, Any]]:
        """The models this node offers now, as its card carries them."""
        return [o.to_wire() for s in self._served.values() if (o := s.offer()) is not None]

    def status(self) -> list[dict[str, Any]]:
        """Each ``[models]`` entry: its listing, engine, health and load."""
        out = []
        for s in self._served.values():
            input_price, output_price = s.prices()
            out.append(
                {
                    "name": s.config.name,
                    "model": s.ref,
                    "backend": s.config.backend,
                    "healthy": s.healthy,
                    "listed": s.listing is not None,
                    "input_price": input_price,
                    "output_price": output_price,
                    "context_length": s.context_length if s.listing else 0,
                    "tokens_per_s": round(s.tokens_per_s, 1),
                    "running": s.running,
                    "waiting": s.waiting,
                }
            )
        return out

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve calls and watch the engines until cancelled; the engines' HTTP
        clients are closed on the way out."""
        self._overlay.requests.serve_exchange(INFER, self._answer)
        self._tasks.model_offers = self.offers
        try:
            async with trio.open_nursery() as nursery:
                for served in self._served.values():
                    nursery.start_soon(self._watch, served)
                task_status.started()
                await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                for served in self._served.values():
                    await served.engine.aclose()

    async def _watch(self, served: _Served) -> None:
        """Check the engine every ``health_interval_s`` and the listing every second
        (it may arrive by sync any time); announce a change at once."""
        checked = -math.inf
        while True:
            healthy = served.healthy
            if trio.current_time() - checked >= served.config.health_interval_s:
                healthy = await served.engine.healthy()
                checked = trio.current_time()
            publisher, _, name = served.ref.partition("/")
            shown = await self._registry.show(publisher, name)
            listing = shown if shown and shown.get("kind") == "model" else None
            if listing is not None and listing.get("deprecated"):
                listing = None
            if (healthy, listing is None) != (served.healthy, served.listing is None):
                log.info(
                    "model %s", "offered" if healthy and listing else "withdrawn",
                    extra={"model": served.ref, "engine": served.config.backend,
                           "healthy": healthy, "listed": listing is not None},
                )  # fmt: skip
                served.healthy, served.listing = healthy, listing
                self._tasks.beat()
            served.healthy, served.listing = healthy, listing
            await trio.sleep(min(served.config.health_interval_s, LISTING_CHECK_S))

    # -- one call --------------------------------------------------------------------

    async def _answer(self, peer: str, request: InferRequest, exchange: Exchange) -> None:
        served = self._served.get(request.model)
        if served is None or served.listing is None:
            raise Refused("not_served", "this node does not serve that model")
        if not served.healthy:
            raise Refused("unavailable", "this node's engine for that model is down")
        input_price, output_price = served.prices()
        if input_price > request.input_price or output_price > request.output_price:
            raise Refused(
                "over_price",
                f"this node asks {input_price} and {output_price} lamports per 1,000 input "
                "and output tokens, over the prices you accept",
            )
        chat, max_tokens = self._checked(request, served)
        most = cost(chat.input_bound(served.context_length), max_tokens, input_price, output_price)
        if self._unpaid.get(peer):
            raise Refused(
                "unpaid", f"you owe this node {self._unpaid[peer]} lamports for a call: pay it"
            )
        channel = await self._channel(peer, request, served, most) if most else None
        if served.waiting >= QUEUE_PER_SLOT * served.config.concurrency:
            raise Refused("busy", "too many calls wait for this model: try another provider")
        served.waiting += 1
        try:
            await served.slots.acquire()
        finally:
            served.waiting -= 1
        served.running += 1
        try:
            await self._serve(peer, request, exchange, served, channel)
        finally:
            served.running -= 1
            served.slots.release()
        self.served_calls += 1

    def _checked(self, request: InferRequest, served: _Served) -> tuple[Any, int]:
        try:
            chat = parse_chat(json.loads(request.body), need_model=False)
        except ValueError as exc:  # BadModelRequest is one, and so is bad JSON
            raise Refused("bad_request", f"the chat request is malformed: {exc}") from exc
        max_tokens = min(request.max_tokens, chat.max_tokens or request.max_tokens)
        if max_tokens >= served.context_length:
            raise Refused(
                "context_length_exceeded",
                f"max_tokens {max_tokens} leaves no room in the model's context of "
                f"{served.context_length} tokens",
            )
        return chat, max_tokens

    async def _channel(
        self, peer: str, request: InferRequest, served: _Served, most: int
    ) -> Channel:
        """The channel the user will pay on, checked on the ledger, with room for ``most``."""
        if not request.payment:
            raise Refused("payment_required", f"this model's calls are paid: up to {most}")
        listing = served.listing or {}
        try:
            creator = Pubkey.from_string(listing["publisher"])
            channel, _ = await self._money.accept_payment(
                peer, request.payment, 0, int(listing["royalty_bps"]), creator
            )
        except SettlementError as exc:
            raise Refused("bad_payment", str(exc)) from exc
        if channel.left < most:
            raise Refused(
                "channel_short",
                f"the channel has {channel.left} lamports left; this call may cost {most}",
            )
        return channel

    async def _serve(
        self,
        peer: str,
        request: InferRequest,
        exchange: Exchange,
        served: _Served,
        channel: Channel | None,
    ) -> None:
        started = time.time()
        call = _Call()
        body = engine_body(request.body, served.engine.model)
        body["max_tokens"] = min(request.max_tokens, body.get("max_tokens") or request.max_tokens)
        try:
            await self._relay(served, body, exchange, call)
        except EngineRefused as exc:
            code = exc.code if exc.code == "context_length_exceeded" else "bad_request"
            if exc.status >= 500:
                code = "unavailable"
            raise Refused(code, exc.message) from exc
        except EngineDown as exc:
            if call.first_at is None:  # nothing sent: the user tries another provider
                served.healthy = False
                log.warning(
                    "model withdrawn: its engine failed",
                    extra={"model": served.ref, "why": str(exc)},
                )
                self._tasks.beat()
                raise Refused("unavailable", str(exc)) from exc
            call.error = str(exc)
        receipt = self._receipt(peer, request, served, call, started, channel)
        signed = receipt.sign(self._key)
        if receipt.price:
            self._unpaid[peer] = self._unpaid.get(peer, 0) + receipt.price
        await self._log(receipt, signed, started)
        await exchange.send(InferEnd(receipt=signed, error=call.error[:512]))
        if receipt.price:
            await self._collect(peer, exchange, served, receipt)

    async def _relay(
        self, served: _Served, body: dict[str, Any], exchange: Exchange, call: _Call
    ) -> None:
        """Pass the engine's chunks on as they come, counting them."""
        async with aclosing(served.engine.stream(body)) as chunks:
            async for data in chunks:
                await self._pass_on(data, exchange, call)
        produced = _count((call.usage or {}).get("completion_tokens")) or call.listed
        if call.first_at is not None and produced:
            took = max(time.monotonic() - call.first_at, 1e-3)
            speed = produced / took
            old = served.tokens_per_s or speed
            served.tokens_per_s = (1 - SPEED_ALPHA) * old + SPEED_ALPHA * speed

    @staticmethod
    async def _pass_on(data: bytes, exchange: Exchange, call: _Call) -> None:
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise EngineDown("the engine sent a chunk that is not JSON") from exc
        if not isinstance(chunk, dict):
            raise EngineDown("the engine sent a chunk that is not an object")
        if isinstance(chunk.get("usage"), dict):
            call.usage = chunk["usage"]
        call.listed += tokens_listed(chunk)
        if call.first_at is None:
            call.first_at = time.monotonic()
        call.hash.add(data)
        await exchange.send(InferChunk(data=data))

    def _receipt(
        self,
        peer: str,
        request: InferRequest,
        served: _Served,
        call: _Call,
        started: float,
        channel: Channel | None,
    ) -> InferReceipt:
        input_price, output_price = served.prices()
        usage = call.usage if not call.error else None
        if usage is not None:
            input_tokens = _count(usage.get("prompt_tokens"))
            output_tokens = _count(usage.get("completion_tokens"))
        else:  # broke off: the tokens delivered, and no input (the engine never said)
            input_tokens, output_tokens = 0, call.listed
        price = cost(input_tokens, output_tokens, input_price, output_price)
        return InferReceipt(
            call=request.call,
            model=request.model,
            provider=self._overlay.peer_id,
            user=peer,
            request_hash=request_hash(request.body),
            output_hash=call.hash.digest(),
            chunks=call.hash.chunks,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            input_price=input_price,
            output_price=output_price,
            price=price,
            outcome="failed" if call.error else "ok",
            wall_ms=int((time.time() - started) * 1000),
            time=int(time.time()),
            channel=str(channel.terms.stake) if channel else "",
            cumulative=(sum(channel.settled.values()) + price) if channel else 0,
        )

    async def _collect(
        self, peer: str, exchange: Exchange, served: _Served, receipt: InferReceipt
    ) -> None:
        """Take the user's payment for the call just delivered."""
        try:
            pay = await exchange.receive(idle_s=PAY_WAIT_S)
        except RequestFailed as exc:
            log.warning(
                "a model call was not paid: %s", exc,
                extra={"peer": peer, "model": receipt.model, "lamports": receipt.price},
            )  # fmt: skip
            return
        if not isinstance(pay, InferPay):
            raise Refused("bad_payment", "expected the payment for the call")
        listing = served.listing or {}
        try:
            creator = Pubkey.from_string(str(listing.get("publisher", "")))
            await self._money.accept_payment(
                peer, pay.payment, receipt.price, int(listing.get("royalty_bps", 0)), creator
            )
        except PaymentShort as exc:
            raise Refused("payment_short", str(exc)) from exc
        except (SettlementError, ValueError) as exc:
            raise Refused("bad_payment", str(exc)) from exc
        owed = self._unpaid.get(peer, 0) - receipt.price
        if owed > 0:
            self._unpaid[peer] = owed
        else:
            self._unpaid.pop(peer, None)
        log.info(
            "model call paid",
            extra={"peer": peer, "model": receipt.model, "lamports": receipt.price,
                   "input_tokens": receipt.input_tokens, "output_tokens": receipt.output_tokens},
        )  # fmt: skip
        await exchange.send(InferPaid())

    async def _log(self, receipt: InferReceipt, signed: bytes, started: float) -> None:
        record = TaskRecord(
            receipt.call.hex(), "provider", receipt.model, "", self._overlay.peer_id,
            receipt.user, receipt.outcome, receipt.price, started, receipt.wall_ms, "", "",
            [], signed, input_tokens=receipt.input_tokens, output_tokens=receipt.output_tokens,
        )  # fmt: skip
        try:
            await self._tasklog.write(record)
        except Exception as exc:
            log.warning("could not record a model call: %s", exc, extra={"call": record.id})


def _count(value: Any) -> int:
    return value if type(value) is int and 0 <= value < 2**40 else 0
