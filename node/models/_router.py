"""The user's side of models: pick a provider, stream its answer, check, pay.

`ModelRouter.start` takes a checked chat request (`_openai.ChatRequest`):

1. The model is a listing of kind ``model`` this node's registry knows, named
   ``PUBLISHER/NAME`` (or ``NAME`` when one served model has it). Its
   providers are the live agent cards that offer it (never this node).
2. A call's most is every prompt token (bounded by its bytes and the chat
   template, never past the context) and ``max_tokens`` output tokens at the
   provider's prices; providers whose most is over the caller's cap are left
   out. The rest are ranked by `_choice.rank` (prices, reputation, latency to
   the first token, load).
3. The best is asked; a priced call first shows the channel it will pay on
   (opened if needed, with room for the most). A provider that refuses or
   fails before its first chunk is recorded and the next is asked, up to
   ``[tasks] max_attempts``; a request the provider finds malformed or over
   the context is not tried elsewhere.
4. Once a chunk has arrived the call stays with that provider: chunks go to
   the caller as they come. The receipt at the end is checked (see
   `_messages`); a good one is paid, exactly its price, through the channel,
   and its leaf kept and acknowledged like a task's. A bad one is not paid,
   and the provider is penalised as a cheat.
5. Every call goes to the task log with its tokens, and to the provider's
   reputation.

The call runs in the router's nursery; `start` returns once its first chunk
arrived (or raises what stopped every attempt), and the caller reads the rest
from `ModelCall.events`. Closing the events (the caller went away) resets the
stream: the provider stops, and nothing is paid for a call without receipt.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import trio
from solders.pubkey import Pubkey

from mercato.crdt import Query
from mercato.p2p import Overlay, P2PError, RemoteError
from mercato.runtime import HostStatus
from mercato.settlement import SettlementError

from .._config import TasksSection
from ..money import SettlementService, task_amounts
from ..registry import RegistryService
from ..tasks import (
    BadReceipt,
    Budget,
    CardExchange,
    Charged,
    SubResult,
    TaskLog,
    TaskRecord,
    TaskRunner,
    rank,
)
from ._messages import (
    INFER,
    MAX_CHUNK,
    MAX_REQUEST_BODY,
    BadModelRequest,
    InferChunk,
    InferEnd,
    InferPaid,
    InferPay,
    InferReceipt,
    InferRequest,
    ModelError,
    ModelUnavailable,
    NoModel,
    StreamHash,
    cost,
    request_hash,
)
from ._openai import (
    Answer,
    ChatRequest,
    checked_chunk,
    client_chunk,
    content_bytes,
    loads_strict,
    parse_chat,
    usage_of,
)

log = logging.getLogger("mercato.models")

DEFAULT_MAX_TOKENS = 1024
MAX_MODELS = 100  # model listings GET /v1/models follows (the newest first)
PAID_WAIT_S = 30.0
DEFINITIVE = {
    "context_length_exceeded": "context_length_exceeded",
    "bad_request": "invalid_request",
}
PENALTY_BAD_RECEIPT = 50.0


class _CallerGone(Exception):
    """The caller stopped reading the call's events: reset the stream."""


@dataclass(frozen=True)
class CallEvent:
    """What the caller reads of a call: ``chunk`` (an OpenAI chunk), ``end`` (the
    checked usage and price), or ``error`` (the call broke off after chunks)."""

    kind: str
    chunk: dict[str, Any] | None = None
    usage: dict[str, int] | None = None
    lamports: int = 0
    error: str = ""
    receipt: bytes = b""
    """The provider's signed receipt, checked (``end``, and ``error`` after one came)."""
    bad: bool = False
    """An ``error``: the provider's answer did not hold up (nothing was paid)."""


@dataclass
class ModelCall:
    """A call in flight: read its `events` until ``end`` or ``error``; close them
    to abandon it."""

    id: str
    model: str
    provider: str
    events: trio.MemoryReceiveChannel[CallEvent]


@dataclass
class _Plan:
    chat: ChatRequest
    ref: str
    listing: dict[str, Any]
    max_tokens: int
    input_bound: int
    budget: Budget
    call: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    failures: list[dict[str, str]] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.time)
    streaming: bool = False
    """A provider has streamed: the call is its, and `start` has returned."""
    shown: str = ""
    """The channel shown to the provider (a priced model's): its receipt names it."""
    parent: bytes = b""
    """The task whose agent makes the call (`call_for`): its receipt names it."""

    @property
    def call_id(self) -> str:
        return "chatcmpl-" + self.call.hex()


@dataclass(frozen=True)
class _Caller:
    """Where a call's events go, and how `start` hears that it has begun."""

    send: trio.MemorySendChannel[CallEvent]
    receive: trio.MemoryReceiveChannel[CallEvent]
    task_status: trio.TaskStatus[ModelCall]


@dataclass(frozen=True)
class _Candidate:
    provider: str
    wallet: str
    input_price: int
    output_price: int
    most: int
    addrs: list[str]


class ModelRouter:
    """Routes this node's model calls to providers (see the module docstring)."""

    def __init__(
        self,
        overlay: Overlay,
        registry: RegistryService,
        cards: CardExchange,
        money: SettlementService,
        runner: TaskRunner,
        tasklog: TaskLog,
        config: TasksSection,
    ) -> None:
        self._overlay = overlay
        self._registry = registry
        self._cards = cards.book
        self._exchange = cards
        self._money = money
        self._runner = runner
        self._log = tasklog
        self._config = config
        self._nursery: trio.Nursery | None = None
        self._reserved: dict[str, int] = {}  # per provider: the most of calls in flight

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the calls in flight until cancelled (which ends them)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # -- what can be called ----------------------------------------------------------

    async def models(self) -> list[dict[str, Any]]:
        """Every model another live provider offers and this node's registry knows (a
        call needs its listing): its id, providers, lowest prices. Asking follows
        every model listing: the first time, their providers are looked up (within
        the quote deadline); after that their cards keep coming."""
        await self._follow_models()
        me = self._overlay.peer_id
        out = []
        for model, offers in sorted(self._cards.models().items()):
            others = [o for p, o in offers if p != me]
            publisher, _, name = model.partition("/")
            shown = await self._registry.show(publisher, name) if others else None
            if shown is not None and shown.get("kind") == "model" and not shown.get("deprecated"):
                out.append(
                    {
                        "id": model,
                        "providers": len(others),
                        "input_price": min(o.input_price for o in others),
                        "output_price": min(o.output_price for o in others),
                        "context_length": max(o.context_length for o in others),
                        "tokens_per_s": max(o.tokens_per_s for o in others),
                    }
                )
        return out

    async def _follow_models(self) -> None:
        page = await self._registry.search(Query(kind="model", sort="newest", limit=MAX_MODELS))
        refs = [f"{r['publisher']}/{r['name']}" for r in page["results"]]
        new = [ref for ref in refs if not self._exchange.follows(ref)]
        for ref in refs:
            if ref not in new:
                self._exchange.follow(ref)
        async with trio.open_nursery() as nursery:
            for ref in new:
                nursery.start_soon(self._exchange.find, ref, self._runner.lookup_s)

    async def resolve(self, model: str) -> tuple[str, dict[str, Any]]:
        """The model listing ``model`` names: ``PUBLISHER/NAME``, or ``NAME`` when one
        offered model has that name. NoModel otherwise."""
        ref = model
        if "/" not in model:
            named = [m["id"] for m in await self.models() if m["id"].partition("/")[2] == model]
            if len(named) > 1:
                raise NoModel(f"several models are named {model!r}: use one of {', '.join(named)}")
            if not named:
                raise NoModel(f"no provider on the network serves a model named {model!r}")
            ref = named[0]
        publisher, _, name = ref.partition("/")
        shown = await self._registry.show(publisher, name) if publisher and name else None
        if shown is None or shown.get("kind") != "model" or shown.get("deprecated"):
            raise NoModel(f"this node's registry has no model {ref[:120]!r}: see GET /v1/models")
        await self._exchange.find(ref, self._runner.lookup_s)
        return ref, shown

    async def plan(self, chat: ChatRequest, budget: Budget) -> _Plan:
        """What a call of ``chat`` is: its model, its output cap and its prompt's most."""
        ref, listing = await self.resolve(chat.model)
        context = int((listing.get("model") or {}).get("context_length") or 1)
        bound = chat.input_bound(context)
        max_tokens = chat.max_tokens or min(DEFAULT_MAX_TOKENS, context - bound)
        if max_tokens < 1 or max_tokens >= context:
            raise BadModelRequest(
                f"max_tokens {max_tokens} does not fit the model's context of {context} tokens",
                code="context_length_exceeded",
                param="max_tokens",
            )
        if len(chat.wire(max_tokens)) > MAX_REQUEST_BODY:
            raise BadModelRequest(
                f"the request is over {MAX_REQUEST_BODY} bytes: shorten the messages",
                param="messages",
            )
        return _Plan(chat, ref, listing, max_tokens, bound, budget)

    def most(self, plan: _Plan) -> int:
        """The most a call of ``plan`` may cost on any live provider of its model."""
        offers = self._cards.model_candidates(plan.ref)
        return max((self._candidate(c, plan).most for c in offers), default=0)

    def _candidate(self, card: dict[str, Any], plan: _Plan) -> _Candidate:
        offer = card["offer"]
        most = cost(plan.input_bound, plan.max_tokens, offer.input_price, offer.output_price)
        return _Candidate(
            card["provider"], card["wallet"], offer.input_price, offer.output_price, most,
            card["addrs"],
        )  # fmt: skip

    def _ranked(self, plan: _Plan, provider: str | None) -> list[_Candidate]:
        me = self._overlay.peer_id
        cards = [
            c
            for c in self._cards.model_candidates(plan.ref)
            if c["provider"] != me and provider in (None, c["provider"])
        ]
        if not cards:
            raise NoModel(f"no live provider serves {plan.ref} now")
        candidates = [self._candidate(c, plan) for c in cards]
        fits = [c for c in candidates if plan.budget.allows(c.most)]
        if not fits:
            cheapest = min(c.most for c in candidates)
            raise BadModelRequest(
                f"this call may cost up to {cheapest} lamports (every prompt token and "
                f"max_tokens {plan.max_tokens}), over what this caller may pay: "
                f"{plan.budget.left} lamports",
                code="over_budget",
                param="max_tokens",
            )
        by_provider = {c.provider: c for c in fits}
        load = {c["provider"]: float(c["offer"].queue) for c in cards}
        offers = [
            self._runner._offer(c.provider, c.input_price + c.output_price, load[c.provider])
            for c in fits
        ]
        return [by_provider[o.provider] for _, o in rank(offers)]

    # -- a call for an agent -------------------------------------------------------------

    async def call_for(self, model: str, raw: bytes, most: int, parent: bytes) -> SubResult:
        """A model call for an agent this node runs (``mercato.infer``; a `tasks.Infer`):
        the request JSON (its ``model`` is ``model``, whatever it says), at most
        ``most`` lamports, its receipt naming the ``parent`` task; the whole answer
        as OpenAI's chat completion JSON. Never raises but on cancellation."""
        try:
            body = loads_strict(raw)
            if not isinstance(body, dict):
                raise ValueError("it is not a JSON object")
            body["model"], body["stream"] = model, False
            body.pop("stream_options", None)
            chat = parse_chat(body)
        except (ValueError, RecursionError, ModelError) as exc:
            why = f"the request is not a chat completion request: {exc}"
            return SubResult(HostStatus.REFUSED, error=why)
        try:
            plan = await self.plan(chat, Budget(most))
            plan.parent = parent
            call = await self.start(plan)
        except BadModelRequest as exc:
            over = exc.code == "over_budget"
            return SubResult(HostStatus.OVER_BUDGET if over else HostStatus.REFUSED, error=str(exc))
        except ModelError as exc:
            return SubResult(HostStatus.UNAVAILABLE, error=str(exc))
        return await _collected(call, chat)

    # -- a call --------------------------------------------------------------------------

    async def start(self, plan: _Plan, provider: str | None = None) -> ModelCall:
        """Start the call: returns once a provider streams its first chunk (or
        ended at once). NoModel, BadModelRequest or ModelUnavailable if none did."""
        if self._nursery is None:
            raise ModelUnavailable("this node's model router is not running")
        ranked = self._ranked(plan, provider)[: max(self._config.max_attempts, 1)]
        call: ModelCall = await self._nursery.start(self._call, plan, ranked)
        return call

    async def _call(
        self,
        plan: _Plan,
        ranked: list[_Candidate],
        task_status: trio.TaskStatus[ModelCall],
    ) -> None:
        send, receive = trio.open_memory_channel[CallEvent](math.inf)
        tried = ""
        try:
            with send:
                for candidate in ranked:
                    tried = candidate.provider
                    if await self._attempt(plan, candidate, _Caller(send, receive, task_status)):
                        return
                why = "; ".join(f"{f['provider']}: {f['error']}" for f in plan.failures)
                raise ModelUnavailable(f"no provider could serve {plan.ref}: {why}")
        except ModelError as exc:  # before any chunk: the caller hears it from `start`
            await self._record(plan, tried, None, None, str(exc))
            raise
        except Exception:
            if not plan.streaming:
                raise
            # After the first chunk nothing may escape into the router's nursery.
            log.exception("a model call failed", extra={"model": plan.ref, "peer": tried})
        finally:
            self._runner.spending.release(plan.budget)  # what it did not pay is free again

    async def _attempt(self, plan: _Plan, candidate: _Candidate, caller: _Caller) -> bool:
        """Ask one provider; True once it streamed (the call is then done with here)."""
        provider = candidate.provider
        # The calls in flight to one provider each hold their most against the
        # channel, so that together they never need more than it has left.
        self._reserved[provider] = self._reserved.get(provider, 0) + candidate.most
        try:
            return await self._ask(plan, candidate, caller)
        finally:
            self._reserved[provider] -= candidate.most
            if not self._reserved[provider]:
                del self._reserved[provider]

    async def _ask(self, plan: _Plan, candidate: _Candidate, caller: _Caller) -> bool:
        provider = candidate.provider
        send = caller.send
        try:
            await self._runner._reach(provider, candidate.addrs)
            payment = await self._show_channel(plan, candidate, self._reserved[provider])
            request = InferRequest(
                call=plan.call,
                model=plan.ref,
                body=plan.chat.wire(plan.max_tokens),
                max_tokens=plan.max_tokens,
                input_price=candidate.input_price,
                output_price=candidate.output_price,
                payment=payment,
                parent=plan.parent,
            )
            asked = time.monotonic()
            async with self._overlay.requests.exchange(provider, INFER, request) as exchange:
                first = await exchange.receive()
                latency_ms = (time.monotonic() - asked) * 1000
                plan.streaming = True
                caller.task_status.started(
                    ModelCall(plan.call_id, plan.ref, provider, caller.receive)
                )
                await self._stream(plan, candidate, exchange, first, send, latency_ms)
                return True
        except _CallerGone:  # the stream was reset: the provider stops, nothing is owed
            await self._record(plan, provider, None, None, "the caller went away")
            return True
        except (P2PError, SettlementError) as exc:
            if plan.streaming:  # closing the stream failed after the call was done
                log.debug("a model call's stream ended badly: %s", exc, extra={"peer": provider})
                return True
            if not isinstance(exc, RemoteError):
                self._judge(plan, provider, "failed", str(exc))
            elif exc.code in DEFINITIVE:
                raise BadModelRequest(exc.message, code=DEFINITIVE[exc.code]) from exc
            else:
                self._judge(plan, provider, "refused", str(exc))  # "code: message"
        return False

    async def _show_channel(self, plan: _Plan, candidate: _Candidate, room: int) -> bytes:
        """For a priced model: the channel the call will be paid on, opened if need
        be with ``room`` left (the most of the calls in flight to that provider,
        this one's included); its latest state, paying nothing new."""
        if candidate.most == 0:
            return b""
        try:
            payee = Pubkey.from_string(candidate.wallet)
        except ValueError as exc:
            raise SettlementError("the provider's card names no wallet to pay") from exc
        # After the payment of this node's last call to it, if one is on its way: the
        # provider serves no one who owes it a call.
        async with self._money.paying(candidate.provider):
            payment, channel, _ = await self._money.pay_for(
                candidate.provider, payee, {}, room=room
            )
        plan.shown = str(channel.terms.stake)
        return payment

    async def _stream(
        self,
        plan: _Plan,
        candidate: _Candidate,
        exchange: Any,
        first: Any,
        send: trio.MemorySendChannel[CallEvent],
        latency_ms: float,
    ) -> None:
        """Pass the chunks on, then check the receipt and pay for it. Errors from
        here on reach the caller as an ``error`` event."""
        seen = StreamHash()
        written = received = 0
        # A call holds at most a chunk a token (and a few more: role, usage, stop),
        # each about 0.4 kB, and 1.7 kB with 20 alternatives a token (llama.cpp);
        # past a few times that a provider is flooding.
        most_chunks = plan.max_tokens + 16
        alternatives = int(plan.chat.params.get("top_logprobs", 1))
        most_bytes = MAX_CHUNK * 4 + most_chunks * 1024 * (2 + alternatives)
        message = first
        try:
            while isinstance(message, InferChunk):
                seen.add(message.data)
                received += len(message.data)
                if seen.chunks > most_chunks or received > most_bytes:
                    raise BadReceipt("the provider sent more than a call of max_tokens holds")
                chunk = checked_chunk(message.data)
                written += content_bytes(chunk)
                shown = client_chunk(chunk, plan.call_id, plan.ref, plan.chat.logprobs)
                if shown is not None:
                    try:
                        send.send_nowait(CallEvent("chunk", chunk=shown))
                    except trio.BrokenResourceError:
                        raise _CallerGone from None
                message = await exchange.receive()
            if not isinstance(message, InferEnd):
                raise BadReceipt("the provider sent something else than the call's end")
            receipt = self._checked(plan, candidate, message, seen, written)
        except (BadReceipt, ValueError) as exc:
            why = f"the provider's answer does not hold up: {exc}"
            self._judge(plan, candidate.provider, "bad_receipt", why)
            await self._overlay.host.penalize(candidate.provider, PENALTY_BAD_RECEIPT, why)
            await self._record(plan, candidate.provider, None, None, why)
            with contextlib.suppress(trio.BrokenResourceError):
                send.send_nowait(CallEvent("error", error=why + " (nothing was paid)", bad=True))
            return
        except P2PError as exc:
            why = f"the call broke off: {exc}"
            self._judge(plan, candidate.provider, "failed", why)
            await self._record(plan, candidate.provider, None, None, why)
            with contextlib.suppress(trio.BrokenResourceError):
                send.send_nowait(CallEvent("error", error=why + " (nothing was paid)"))
            return
        # The answer first, then the payment: the budget now holds exactly the price.
        plan.budget.limit = plan.budget.paid + receipt.price
        usage = usage_of(receipt.input_tokens, receipt.output_tokens)
        with contextlib.suppress(trio.BrokenResourceError):  # the caller may be gone
            if message.error:
                error = f"the provider's engine broke off: {message.error}"
                send.send_nowait(
                    CallEvent(
                        "error", usage=usage, lamports=receipt.price, error=error,
                        receipt=message.receipt,
                    )
                )  # fmt: skip
            else:
                send.send_nowait(
                    CallEvent("end", usage=usage, lamports=receipt.price, receipt=message.receipt)
                )
        stake = await self._pay(plan, candidate, exchange, receipt, message.receipt)
        if stake:
            await self._spent(plan, candidate.provider, receipt.price)
            self._runner._acknowledge(candidate.provider, stake, plan.ref, plan.call)
        self._runner.spending.release(plan.budget)  # spent is counted: the rest is free
        if message.error:
            self._judge(plan, candidate.provider, "failed", message.error)
        else:
            self._judge(plan, candidate.provider, "ok", "", latency_ms)
        await self._record(plan, candidate.provider, receipt, message.receipt, message.error)

    async def _spent(self, plan: _Plan, provider: str, lamports: int) -> None:
        try:
            await self._runner.spending.record(lamports, provider, plan.call.hex(), plan.budget)
        except Exception as exc:  # the call is paid all the same
            log.warning("could not record a payment: %s", exc, extra={"call": plan.call.hex()})

    def _checked(
        self,
        plan: _Plan,
        candidate: _Candidate,
        end: InferEnd,
        seen: StreamHash,
        written: int,
    ) -> InferReceipt:
        """The receipt, if it is this provider's for this call and its counts fit
        what arrived; BadReceipt otherwise."""
        r = InferReceipt.verify(end.receipt)
        me = self._overlay.peer_id
        if (r.provider, r.user, r.call, r.model) != (candidate.provider, me, plan.call, plan.ref):
            raise BadReceipt("the receipt is for another call, user or provider")
        if r.channel != plan.shown:
            raise BadReceipt("the receipt names another channel than the one shown")
        if r.parent != plan.parent:
            raise BadReceipt("the receipt names another calling task")
        if r.request_hash != request_hash(plan.chat.wire(plan.max_tokens)):
            raise BadReceipt("the receipt names another request")
        if r.output_hash != seen.digest() or r.chunks != seen.chunks:
            raise BadReceipt("the receipt names other chunks than those received")
        if r.input_price > candidate.input_price or r.output_price > candidate.output_price:
            raise BadReceipt("the receipt charges more per token than the card offered")
        if r.price != cost(r.input_tokens, r.output_tokens, r.input_price, r.output_price):
            raise BadReceipt("the receipt's price is not its counts at its prices")
        # A token is at least one byte of text, but the stop token, which shows none
        # (llama.cpp merges tokens that are not whole UTF-8 into one chunk, and lists
        # only one of them: neither chunks nor listed tokens count them). The
        # provider's own `logprobs` lists are not trusted for this.
        most_out = min(written + 1, plan.max_tokens)
        if r.output_tokens > most_out:
            raise BadReceipt(
                f"the receipt counts {r.output_tokens} output tokens; what was streamed "
                f"holds at most {most_out}"
            )
        if r.input_tokens > plan.input_bound:
            raise BadReceipt(
                f"the receipt counts {r.input_tokens} input tokens; the prompt holds at most "
                f"{plan.input_bound}"
            )
        if (r.outcome == "failed") != bool(end.error):
            raise BadReceipt("the receipt's outcome contradicts the end of the stream")
        return r

    async def _pay(
        self,
        plan: _Plan,
        candidate: _Candidate,
        exchange: Any,
        receipt: InferReceipt,
        signed: bytes,
    ) -> str:
        """Pay exactly the receipt's price; the channel it was paid on ("" if it was
        free, or could not be paid)."""
        if receipt.price == 0:
            return ""
        me = self._money.wallet.pubkey()
        try:
            payee = Pubkey.from_string(candidate.wallet)
            creator = Pubkey.from_string(plan.listing["publisher"])
            amounts = task_amounts(
                receipt.price, int(plan.listing["royalty_bps"]), payee, creator, me
            )
            async with self._money.paying(candidate.provider):
                payment, channel, relied = await self._money.pay_for(
                    candidate.provider, payee, amounts
                )
                await exchange.send(InferPay(payment=payment))
                try:
                    answer = await exchange.receive(idle_s=PAID_WAIT_S)
                except RemoteError as exc:
                    if exc.code == "payment_short" and relied:
                        # The provider had used what this node counted as credit (a
                        # payment whose acknowledgement was lost): that credit is
                        # spent. A new state pays this call, shown with the next one.
                        await self._money.settle(channel, relied)
                        await self._money.pay_for(candidate.provider, payee, amounts)
                    raise
                if not isinstance(answer, InferPaid):
                    raise SettlementError("the provider did not take the payment")
                channel = await self._money.settle(channel, amounts, signed, receipt.cumulative)
        except (SettlementError, P2PError, ValueError) as exc:
            # A state signed but not taken stays credit: the next call uses it first.
            log.warning(
                "a model call could not be paid: %s", exc,
                extra={"peer": candidate.provider, "model": plan.ref, "lamports": receipt.price},
            )  # fmt: skip
            return ""
        return str(channel.terms.stake)

    def _judge(
        self, plan: _Plan, provider: str, event: str, why: str, latency_ms: float | None = None
    ) -> None:
        self._runner.reputation.record(provider, event, latency_ms)
        plan.changed.add(provider)
        if event != "ok":
            plan.failures.append({"provider": provider, "error": why[:300]})

    async def _record(
        self,
        plan: _Plan,
        provider: str,
        receipt: InferReceipt | None,
        signed: bytes | None,
        error: str,
    ) -> None:
        """Write the call to the task log with the standings it changed."""
        me = self._overlay.peer_id
        if receipt is None or signed is None:
            record = TaskRecord(
                plan.call.hex(), "user", plan.ref, "", provider, me, "failed", 0,
                plan.started, 0, "", error[:500], plan.failures,
            )  # fmt: skip
        else:
            record = TaskRecord(
                plan.call.hex(), "user", plan.ref, "", provider, me, receipt.outcome,
                receipt.price, plan.started, receipt.wall_ms, "receipt", error[:500],
                plan.failures, signed, input_tokens=receipt.input_tokens,
                output_tokens=receipt.output_tokens,
            )  # fmt: skip
        standings = [self._runner.reputation.current(p) for p in plan.changed]
        try:
            with trio.CancelScope(shield=True):
                await self._log.write(record, standings)
        except Exception as exc:
            log.warning("could not record a model call: %s", exc, extra={"call": record.id})


async def collect_answer(
    call: ModelCall, chat: ChatRequest
) -> tuple[dict[str, Any] | None, CallEvent | None]:
    """Read a call's events to their end: the whole answer in OpenAI's form (when it
    ended well) and the event that ended it (None if the events just stopped)."""
    answer = Answer(call.id, call.model)
    with call.events:
        async for event in call.events:
            if event.kind == "chunk" and event.chunk is not None:
                answer.add(event.chunk)
            elif event.kind == "end":
                return answer.completion(event.usage or {}, chat.logprobs), event
            else:
                return None, event
    return None, None


async def _collected(call: ModelCall, chat: ChatRequest) -> SubResult:
    """A started call's whole answer, for an agent."""
    done, last = await collect_answer(call, chat)
    if last is None:
        return SubResult(HostStatus.UNAVAILABLE, error="the call ended without an answer")
    if done is not None:
        output = json.dumps(done, ensure_ascii=False).encode()
        return SubResult(0, output, last.receipt, last.lamports)
    if last.receipt:  # broke off after a receipt: what came is paid
        return SubResult(HostStatus.FAILED, receipt=last.receipt, cost=last.lamports,
                         error=last.error)  # fmt: skip
    status = HostStatus.BAD_RECEIPT if last.bad else HostStatus.UNAVAILABLE
    return SubResult(status, error=last.error)


def read_call_receipt(signed: bytes) -> Charged:
    """A model call's receipt as a sub-call of an agent (a `tasks.ReceiptReader`)."""
    r = InferReceipt.verify(signed)
    return Charged(r.call, r.provider, r.user, r.model, r.parent, r.outcome == "ok", r.price)
