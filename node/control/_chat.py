"""The facade's model operations: OpenAI's ``/v1/models`` and ``/v1/chat/completions``.

A call obeys ``[spending]`` like a run: it may cost at most the least of
``max_per_task``, ``approve_above`` (a chat client cannot ask a human) and
what is left today under ``max_per_day`` (the calls in flight reserve their
most until they end). A provider is asked only if the call's most (every
prompt token and ``max_tokens`` at its prices) fits; if none fits, the call is
refused 403 ``over_spending_limit`` before any peer hears of it.

Errors are OpenAI's: ``{"error": {"message", "type", "param", "code"}}``,
with 404 ``model_not_found``, 400 ``invalid_request`` or
``context_length_exceeded``, 403 ``over_spending_limit``, 502
``provider_error`` (every provider failed before streaming).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import trio

from ..models import (
    BadModelRequest,
    CallEvent,
    ModelCall,
    ModelError,
    NoModel,
    collect_answer,
    error_body,
    loads_strict,
    parse_chat,
)
from ..tasks import Budget

if TYPE_CHECKING:
    from .._node import Node


class ChatFailed(Exception):
    """A call refused or failed, with the HTTP status and OpenAI error body to answer."""

    def __init__(self, status: int, body: dict[str, Any], retry: bool = True) -> None:
        super().__init__(body["error"]["message"])
        self.status, self.body = status, body
        self.retry = retry
        """False once tokens were delivered and paid for: a retry would pay again
        (OpenAI's clients honour ``x-should-retry: false``)."""


def _failed(exc: ModelError) -> ChatFailed:
    if isinstance(exc, NoModel):
        return ChatFailed(404, error_body(str(exc), "invalid_request_error", "model_not_found"))
    if isinstance(exc, BadModelRequest):
        status = 403 if exc.code == "over_budget" else 400
        code = "over_spending_limit" if exc.code == "over_budget" else exc.code
        return ChatFailed(status, error_body(str(exc), "invalid_request_error", code, exc.param))
    return ChatFailed(502, error_body(str(exc), "api_error", "provider_error"))


class ModelOps:
    """Models on the network, for OpenAI clients (see the module docstring)."""

    def __init__(self, node: Node) -> None:
        self._node = node

    async def models(self) -> dict[str, Any]:
        """OpenAI's model list: every model another live provider serves now."""
        data = []
        for model in await self._node.models.models():
            publisher = model["id"].partition("/")[0]
            data.append(
                {
                    "id": model["id"],
                    "object": "model",
                    "created": 0,
                    "owned_by": publisher,
                    "context_length": model["context_length"],
                    "mercato": model,
                }
            )
        return {"object": "list", "data": data}

    def served(self) -> list[dict[str, Any]]:
        """The ``[models]`` engines this node serves, with their health and load."""
        return self._node.model_service.status()

    async def start(self, raw: bytes) -> tuple[ModelCall, Any]:
        """Check the body, admit the call under ``[spending]`` and start it; the call
        and its checked request. ChatFailed if it cannot start."""
        try:
            body = loads_strict(raw)
        except (ValueError, RecursionError):
            raise ChatFailed(
                400, error_body("the body is not valid JSON", "invalid_request_error", "bad_json")
            ) from None
        router = self._node.models
        spending = self._node.tasks.spending
        try:
            chat = parse_chat(body)
            budget = await self._budget()
            try:
                plan = await router.plan(chat, budget)
                provider = body.get("provider") if isinstance(body.get("provider"), str) else None
                call = await router.start(plan, provider)
            except BaseException:
                spending.release(budget)
                raise
        except ModelError as exc:
            raise _failed(exc) from exc
        return call, chat

    async def _budget(self) -> Budget:
        """The most a call may pay under ``[spending]``, held until the call ends."""
        limits = self._node.config.spending
        caps = [c for c in (limits.max_per_task, limits.approve_above) if c is not None]
        spending = self._node.tasks.spending
        async with spending.lock:
            if limits.max_per_day is not None:
                spent, reserved = await spending.totals(time.time())
                caps.append(max(limits.max_per_day - spent - reserved, 0))
            budget = Budget(min(caps) if caps else None)
            spending.hold(budget)
        return budget

    async def complete(self, call: ModelCall, chat: Any) -> dict[str, Any]:
        """The whole answer of a call asked without streaming. ChatFailed if it
        broke off (what was delivered is paid, and the error says how much)."""
        done, last = await collect_answer(call, chat)
        if done is not None and last is not None:
            done["mercato"] = {"provider": call.provider, "lamports": last.lamports}
            return done
        if last is not None:
            raise ChatFailed(502, _mid_stream_error(last, call), retry=False)
        raise ChatFailed(
            502, error_body("the call ended without an answer", "api_error", "provider_error")
        )

    def stream(self, call: ModelCall, chat: Any) -> AsyncIterator[bytes]:
        """The call as server-sent events, OpenAI's way: chunks, a usage chunk when
        asked (``stream_options.include_usage``), then ``[DONE]``; an error after the
        first chunk is an event with an ``error`` object. Cancelling its reader
        (the client went away) abandons the call."""
        return EventStream(call, chat)


class EventStream:
    """A call's server-sent events (see `ModelOps.stream`). Not a generator: a
    server that cancels its reader never closes one, and the call must end then,
    not when the garbage collector comes."""

    def __init__(self, call: ModelCall, chat: Any) -> None:
        self._call, self._chat = call, chat
        self._created = int(time.time())
        self._state = "open"  # open, then last (only [DONE] left), then done

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> bytes:
        if self._state == "done":
            raise StopAsyncIteration
        if self._state == "last":
            self._state = "done"
            return b"data: [DONE]\n\n"
        try:
            return await self._next()
        except BaseException:
            self.close()  # the reader was cancelled (or failed): the call is abandoned
            raise

    def close(self) -> None:
        self._state = "done"
        self._call.events.close()

    def __del__(self) -> None:
        self._call.events.close()

    async def _next(self) -> bytes:
        events = self._call.events
        try:
            batch = [await events.receive()]
        except trio.EndOfChannel:  # ended without its end: never pass that off as complete
            batch = [CallEvent("error", error="the call ended without an answer")]
        # What queued while the last write went out goes in one write.
        while batch[-1].kind == "chunk":
            try:
                batch.append(events.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        out = b"".join(_event(e.chunk) for e in batch if e.kind == "chunk")
        last = batch[-1]
        if last.kind == "end" and self._chat.include_usage:
            out += _event(self._usage(last))
        elif last.kind == "error":
            out += _event(_mid_stream_error(last, self._call))
        if last.kind != "chunk":
            self._state = "last"
            events.close()
        return out

    def _usage(self, last: CallEvent) -> dict[str, Any]:
        call = self._call
        return {
            "id": call.id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": call.model,
            "choices": [],
            "usage": last.usage,
            "mercato": {"provider": call.provider, "lamports": last.lamports},
        }


def _mid_stream_error(event: Any, call: ModelCall) -> dict[str, Any]:
    paid = f" ({event.lamports} lamports paid for the tokens delivered)" if event.lamports else ""
    body = error_body(event.error + paid, "api_error", "provider_error")
    body["mercato"] = {"provider": call.provider, "lamports": event.lamports}
    return body


def _event(value: Any) -> bytes:
    return b"data: " + json.dumps(value, separators=(",", ":")).encode() + b"\n\n"
