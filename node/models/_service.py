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

import logging
import math
import time
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio
from solders.pubkey import Pubkey

from mercato.p2p import Exchange, Keypair, Message, Overlay, Refused, RequestFailed
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
from ._openai import (
    ChatRequest,
    checked_chunk,
    content_bytes,
    engine_body,
    loads_strict,
    parse_chat,
    tokens_listed,
)

if TYPE_CHECKING:
    from mercato.settlement import Channel

log = logging.getLogger("mercato.models")

PAY_WAIT_S = 120.0  # the user's node may wait for its own paid task to this node first
QUEUE_WAIT_S = 60.0  # less than the user's wait for a first frame (INFER.idle_s)
LISTING_CHECK_S = 1.0
MAX_BATCH = 64  # chunks in one write
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
class _Debt:
    """What a call costs its user, and whom it pays (the creator's royalty)."""

    price: int
    royalty_bps: int
    creator: str
    prices: tuple[int, int]
    channel: str = ""  # the channel the user showed


@dataclass(frozen=True)
class _Job:
    """One call as the provider serves it."""

    peer: str
    request: InferRequest
    exchange: Exchange
    served: _Served
    chat: ChatRequest
    max_tokens: int
    debt: _Debt


@dataclass
class _Call:
    """What a call has streamed so far."""

    hash: StreamHash = field(default_factory=StreamHash)
    listed: int = 0
    texts: int = 0  # chunks with text
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
        self._unpaid: dict[str, list[_Debt]] = {}  # per user: calls delivered, not paid
        self._inflight: dict[str, int] = {}  # per user: the most its calls in flight cost
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
        prices = served.prices()  # fixed for the call, whatever the listing does meanwhile
        if prices[0] > request.input_price or prices[1] > request.output_price:
            raise Refused(
                "over_price",
                f"this node asks {prices[0]} and {prices[1]} lamports per 1,000 input "
                "and output tokens, over the prices you accept",
            )
        chat, max_tokens = self._checked(request, served)
        most = cost(chat.input_bound(served.context_length), max_tokens, *prices)
        debt = _Debt(
            0, int(served.listing["royalty_bps"]), str(served.listing["publisher"]), prices
        )
        if most:
            await self._channel(peer, request, debt, most)
        # Held from here until the call is paid or given up: the calls in flight of
        # one user never need more than its channel has left.
        self._inflight[peer] = self._inflight.get(peer, 0) + most
        try:
            job = _Job(peer, request, exchange, served, chat, max_tokens, debt)
            signed = await self._run_call(job)
            if signed is not None and debt.price:
                await self._collect(peer, exchange, debt)
        finally:
            self._inflight[peer] -= most
            if not self._inflight[peer]:
                del self._inflight[peer]
        self.served_calls += 1

    async def _run_call(self, job: _Job) -> bytes | None:
        """Wait for an engine slot (at most QUEUE_WAIT_S), stream the call, send its
        receipt; the slot is free again before the payment is waited for."""
        served = job.served
        if served.waiting >= QUEUE_PER_SLOT * served.config.concurrency:
            raise Refused("busy", "too many calls wait for this model: try another provider")
        served.waiting += 1
        try:
            with trio.move_on_after(QUEUE_WAIT_S) as queued:
                await served.slots.acquire()
        finally:
            served.waiting -= 1
        if queued.cancelled_caught:
            raise Refused("busy", "the engine stayed busy: try another provider")
        served.running += 1
        try:
            return await self._serve(job)
        finally:
            served.running -= 1
            served.slots.release()

    def _checked(self, request: InferRequest, served: _Served) -> tuple[ChatRequest, int]:
        try:
            chat = parse_chat(loads_strict(request.body), need_model=False)
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

    async def _channel(self, peer: str, request: InferRequest, debt: _Debt, most: int) -> Channel:
        """The channel the user will pay on, checked on the ledger, with room for
        ``most`` beside its other calls in flight. A user who owes calls must show
        a state that pays them first (``unpaid`` otherwise)."""
        if not request.payment:
            raise Refused("payment_required", f"this model's calls are paid: up to {most}")
        try:
            channel, _ = await self._money.accept_payment(
                peer, request.payment, 0, debt.royalty_bps, Pubkey.from_string(debt.creator)
            )
            channel = await self._settle_debts(peer, request.payment, channel)
            debt.channel = str(channel.terms.stake)
        except SettlementError as exc:
            raise Refused("bad_payment", str(exc)) from exc
        room = channel.left - self._inflight.get(peer, 0)
        if room < most:
            raise Refused(
                "channel_short",
                f"the channel has {room} lamports left beside your calls in flight; this "
                f"call may cost {most}",
            )
        return channel

    async def _settle_debts(self, peer: str, payment: bytes, channel: Channel) -> Channel:
        """Take the calls ``peer`` still owes out of the state it shows; Refused
        ``unpaid`` (the debts kept) if the state does not cover them."""
        for owed in list(self._unpaid.get(peer, [])):
            try:
                channel, _ = await self._money.accept_payment(
                    peer, payment, owed.price, owed.royalty_bps, Pubkey.from_string(owed.creator)
                )
            except PaymentShort as exc:
                total = sum(d.price for d in self._unpaid[peer])
                raise Refused(
                    "unpaid",
                    f"you owe this node {total} lamports for calls it served: a state that "
                    "pays them comes with your next call",
                ) from exc
            self._unpaid[peer].remove(owed)
            log.info("an unpaid call was paid", extra={"peer": peer, "lamports": owed.price})
        self._unpaid.pop(peer, None)
        return channel

    async def _serve(self, job: _Job) -> bytes | None:
        peer, request, exchange, served, debt = (
            job.peer,
            job.request,
            job.exchange,
            job.served,
            job.debt,
        )
        started = time.time()
        call = _Call()
        body = engine_body(job.chat, job.max_tokens, served.engine.model)
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
        receipt = self._receipt(peer, request, debt, call, started)
        debt.price = receipt.price
        signed = receipt.sign(self._key)
        try:
            await exchange.send(InferEnd(receipt=signed, error=call.error[:512]))
        except RequestFailed:
            return None  # the user went away before the receipt: it owes nothing
        finally:  # logged whether or not the user heard
            await self._log(receipt, signed, started)
        return signed

    async def _relay(
        self, served: _Served, body: dict[str, Any], exchange: Exchange, call: _Call
    ) -> None:
        """Pass the engine's chunks on as they come, counting them: what arrived
        while the last write went out goes in the next one (an engine faster than
        the stream costs one write per batch, not per token)."""
        arrived, chunks = trio.open_memory_channel[bytes | Exception](math.inf)
        failed: Exception | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read_engine, served.engine, body, arrived)
            try:
                await self._pass_on(chunks, exchange, call)
            except Exception as exc:  # raised as itself below, not in a group
                failed = exc
            finally:
                nursery.cancel_scope.cancel()  # done, or the user is gone: stop the engine
        if failed is not None:
            raise failed
        produced = _count((call.usage or {}).get("completion_tokens")) or call.listed
        if call.first_at is not None and produced:
            took = max(time.monotonic() - call.first_at, 1e-3)
            speed = produced / took
            old = served.tokens_per_s or speed
            served.tokens_per_s = (1 - SPEED_ALPHA) * old + SPEED_ALPHA * speed

    async def _pass_on(
        self,
        chunks: trio.MemoryReceiveChannel[bytes | Exception],
        exchange: Exchange,
        call: _Call,
    ) -> None:
        async for item in chunks:
            frames: list[Message] = []
            failed: Exception | None = None
            while True:
                if isinstance(item, Exception):
                    failed = item
                    break
                try:
                    frames.append(InferChunk(data=_counted(item, call)))
                except EngineDown as exc:  # counted only what is sent
                    failed = exc
                    break
                if len(frames) >= MAX_BATCH:
                    break
                try:
                    item = chunks.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            if frames:
                await exchange.send_many(frames)
            if failed is not None:
                raise failed

    def _receipt(
        self,
        peer: str,
        request: InferRequest,
        debt: _Debt,
        call: _Call,
        started: float,
    ) -> InferReceipt:
        input_price, output_price = debt.prices
        usage = call.usage if not call.error else None
        if usage is not None:
            input_tokens = _count(usage.get("prompt_tokens"))
            output_tokens = _count(usage.get("completion_tokens"))
        else:  # broke off (or an engine that gives no usage): the tokens delivered, no input
            input_tokens, output_tokens = 0, max(call.listed, call.texts)
        price = cost(input_tokens, output_tokens, input_price, output_price)
        channel = self._money.book.channels.get(debt.channel) if debt.channel else None
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
            channel=debt.channel,
            cumulative=(sum(channel.settled.values()) + price) if channel else 0,
            parent=request.parent,
        )

    async def _collect(self, peer: str, exchange: Exchange, debt: _Debt) -> None:
        """Take the user's payment for the call just delivered; a call not paid is
        owed, and its user served again only once a state pays it."""
        try:
            pay = await exchange.receive(idle_s=PAY_WAIT_S)
            if not isinstance(pay, InferPay):
                raise Refused("bad_payment", "expected the payment for the call")
            await self._money.accept_payment(
                peer, pay.payment, debt.price, debt.royalty_bps, Pubkey.from_string(debt.creator)
            )
        except (RequestFailed, Refused, SettlementError, ValueError) as exc:
            self._unpaid.setdefault(peer, []).append(debt)
            log.warning(
                "a model call was not paid: %s", exc,
                extra={"peer": peer, "lamports": debt.price},
            )  # fmt: skip
            if isinstance(exc, PaymentShort):
                raise Refused("payment_short", str(exc)) from exc
            if isinstance(exc, Refused | SettlementError | ValueError):
                raise Refused("bad_payment", str(exc)) from exc
            return
        log.info("model call paid", extra={"peer": peer, "lamports": debt.price})
        await exchange.send(InferPaid())

    async def _log(self, receipt: InferReceipt, signed: bytes, started: float) -> None:
        record = TaskRecord(
            receipt.call.hex(), "provider", receipt.model, "", self._overlay.peer_id,
            receipt.user, receipt.outcome, receipt.price, started, receipt.wall_ms, "", "",
            [], signed, input_tokens=receipt.input_tokens, output_tokens=receipt.output_tokens,
        )  # fmt: skip
        log.info(
            "model call served: %s for %s, %s, %d lamports, %d ms", receipt.model, receipt.user,
            receipt.outcome, receipt.price, receipt.wall_ms,
            extra={"call": record.id, "model": receipt.model, "user": receipt.user,
                   "price": receipt.price, "outcome": receipt.outcome, "ms": receipt.wall_ms},
        )  # fmt: skip
        try:
            await self._tasklog.write(record)
        except Exception as exc:
            log.warning("could not record a model call: %s", exc, extra={"call": record.id})


async def _read_engine(
    engine: Engine, body: dict[str, Any], arrived: trio.MemorySendChannel[bytes | Exception]
) -> None:
    """Read the engine's chunks into ``arrived``; its error, if any, comes last."""
    async with arrived:
        try:
            async with aclosing(engine.stream(body)) as chunks:
                async for data in chunks:
                    arrived.send_nowait(data)
        except (EngineDown, EngineRefused) as exc:
            arrived.send_nowait(exc)
        except Exception as exc:  # anything else the HTTP client raises: a broken engine
            arrived.send_nowait(EngineDown(f"the engine's answer could not be read: {exc!r}"))


def _counted(data: bytes, call: _Call) -> bytes:
    """Count one engine chunk into ``call``; EngineDown if it is not a JSON object."""
    try:
        chunk = checked_chunk(data)
    except ValueError as exc:
        raise EngineDown(f"the engine sent a malformed chunk: {exc}") from exc
    if isinstance(chunk.get("usage"), dict):
        call.usage = chunk["usage"]
    call.listed += tokens_listed(chunk)
    call.texts += 1 if content_bytes(chunk) else 0
    if call.first_at is None:
        call.first_at = time.monotonic()
    call.hash.add(data)
    return data


def _count(value: Any) -> int:
    return value if type(value) is int and 0 <= value < 2**40 else 0
