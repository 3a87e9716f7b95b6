"""Exchanges: protocols where one request gets a stream of frames, both ways.

`_requests.py` carries one request and one response. Some answers come in
pieces (a model's tokens as it produces them) and some end with a word from
the asker (a payment for what it got). An exchange is one stream::

    client -> server   frame(request message)
    server -> client   frame({"ok": message}) ...        any number, any order
    client -> server   frame({"ok": message}) ...        of the declared types
    either side        frame({"err": {"code", "message"}})  ends it with an error

Frames are varint-length-prefixed canonical CBOR (`_wire.py`), each bounded by
the protocol's ``max_frame_bytes`` and decoded into one of its declared
message types (by the message's ``"t"``). Each side waits at most
``idle_s`` for a frame, and the whole exchange lasts at most ``timeout_s``.
Admission (rate, streams at once per peer and per protocol) and the first
request frame are handled as for requests, with the same penalties for a
malformed, oversized or idle request.

A handler ends the exchange by returning (the stream is closed) or by raising
`Refused` (an error frame is sent). On the client, `Exchange.receive` raises
`RemoteError` for an error frame, `RequestTimeout` when the peer is silent
for ``idle_s``, `BadResponse` for a malformed frame (the peer is penalised)
and `RequestFailed` when the stream ends. Cancelling either side resets the
stream.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic

import trio

from ._messages import Message, MessageError
from ._requests import (
    FIRST_BYTE_S,
    MAX_CONCURRENT_PER_PROTOCOL,
    PENALTY_IDLE,
    PENALTY_MALFORMED,
    PENALTY_OVERSIZED,
    BadResponse,
    Refused,
    RemoteError,
    Req,
    RequestFailed,
    RequestTimeout,
    _IdleStream,
    _StreamBytes,
)
from ._wire import FrameError, FrameReader, FrameTooLarge, encode_frame

if TYPE_CHECKING:
    from ._requests import Requests

log = logging.getLogger("mercato.p2p")
_ERROR_TEXT = 512


@dataclass(frozen=True)
class ExchangeProtocol(Generic[Req]):
    """An exchange protocol: its versioned id, its request, the message types of
    the frames that follow (both ways), and its bounds."""

    id: str
    request: type[Req]
    frames: tuple[type[Message], ...]
    max_request_bytes: int = 64 * 1024
    max_frame_bytes: int = 256 * 1024
    idle_s: float = 30.0
    """The longest either side waits for the other's next frame."""
    timeout_s: float = 600.0
    """The longest one exchange may last."""
    rate_per_s: float = 50.0

    @property
    def max_response_bytes(self) -> int:  # what `_requests._answer` bounds a frame by
        return self.max_frame_bytes


class Exchange:
    """One side of an open exchange: send frames, receive the other side's.

    Not safe for two concurrent receivers (or two concurrent senders)."""

    def __init__(
        self, requests: Requests, peer: str, stream: Any, protocol: ExchangeProtocol[Any]
    ) -> None:
        self.peer = peer
        self._requests = requests
        self._stream = stream
        self._protocol = protocol
        self._reader = FrameReader(_StreamBytes(stream))
        self._types = {t.TYPE: t for t in protocol.frames}
        self._closed = False

    async def send(self, message: Message) -> None:
        """Send one frame; RequestFailed if the stream is gone."""
        await self.send_many([message])

    async def send_many(self, messages: list[Message]) -> None:
        """Send frames in one write (one encrypted frame on the wire, not one each);
        RequestFailed if the stream is gone."""
        bound = self._protocol.max_frame_bytes
        frame = b"".join(encode_frame({"ok": m.to_wire()}, bound) for m in messages)
        try:
            with trio.fail_after(self._protocol.idle_s):
                await self._stream.write(frame)
        except trio.TooSlowError as exc:
            raise RequestTimeout(f"{self._protocol.id}: {self.peer} stopped reading") from exc
        except Exception as exc:
            raise RequestFailed(f"{self._protocol.id}: the stream to {self.peer} broke") from exc
        self._requests.statistics().count(self._protocol.id, sent=len(frame))

    async def fail(self, code: str, message: str) -> None:
        """End the exchange with an error frame (best effort)."""
        body = {"err": {"code": code[:64], "message": message[:_ERROR_TEXT]}}
        with suppress(Exception), trio.move_on_after(self._protocol.idle_s):
            await self._stream.write(encode_frame(body, self._protocol.max_frame_bytes))
        await self.close()

    async def receive(self, idle_s: float | None = None) -> Message:
        """The other side's next frame, as one of the protocol's message types."""
        wait = self._protocol.idle_s if idle_s is None else idle_s
        before = self._reader.bytes_read
        try:
            with trio.fail_after(wait):
                raw = await self._reader.read(self._protocol.max_frame_bytes)
        except trio.TooSlowError as exc:
            raise RequestTimeout(
                f"{self._protocol.id}: nothing from {self.peer} within {wait:g} s"
            ) from exc
        except EOFError as exc:
            raise RequestFailed(f"{self._protocol.id}: {self.peer} ended the stream") from exc
        except FrameError as exc:
            await self._malformed(str(exc))
            raise BadResponse(f"{self._protocol.id}: bad frame from {self.peer}: {exc}") from exc
        self._requests.statistics().count(
            self._protocol.id, received=self._reader.bytes_read - before
        )
        return await self._parse(raw)

    async def _parse(self, raw: Any) -> Message:
        try:
            if isinstance(raw, dict) and set(raw) == {"ok"} and isinstance(raw["ok"], dict):
                kind = self._types.get(str(raw["ok"].get("t")))
                if kind is None:
                    raise MessageError(f"a frame of an unknown type {raw['ok'].get('t')!r}")
                return kind.from_wire(raw["ok"])
            if isinstance(raw, dict) and set(raw) == {"err"} and isinstance(raw["err"], dict):
                code, message = raw["err"].get("code"), raw["err"].get("message")
                if isinstance(code, str) and isinstance(message, str):
                    raise RemoteError(code[:64], message[:_ERROR_TEXT])
            raise MessageError("expected {'ok': message} or {'err': {code, message}}")
        except MessageError as exc:
            await self._malformed(str(exc))
            raise BadResponse(f"{self._protocol.id}: bad frame from {self.peer}: {exc}") from exc

    async def _malformed(self, why: str) -> None:
        await self._requests.host.penalize(
            self.peer, PENALTY_MALFORMED, f"{self._protocol.id}: {why}"
        )

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            with suppress(Exception), trio.move_on_after(2.0):
                await self._stream.close()

    async def reset(self) -> None:
        self._closed = True
        with trio.CancelScope(shield=True), suppress(Exception):
            await self._stream.reset()


Handler = Callable[[str, Any, Exchange], Awaitable[None]]


def serve_exchange(requests: Requests, protocol: ExchangeProtocol[Req], handler: Handler) -> None:
    """Answer ``protocol`` with ``handler(peer_id, request, exchange)``."""
    slots = trio.Semaphore(MAX_CONCURRENT_PER_PROTOCOL)

    async def on_stream(peer: str, stream: Any) -> None:
        async with requests.admitted(peer, stream, protocol, slots) as admitted:
            if admitted:
                await _serve_one(requests, protocol, handler, peer, stream)

    requests.host.set_stream_handler(protocol.id, on_stream)


async def _serve_one(
    requests: Requests,
    protocol: ExchangeProtocol[Any],
    handler: Handler,
    peer: str,
    stream: Any,
) -> None:
    exchange = Exchange(requests, peer, stream, protocol)
    stats = requests.statistics()
    try:
        reader = FrameReader(_StreamBytes(stream, first_byte_s=FIRST_BYTE_S))
        exchange._reader = reader  # the request and what follows share one buffer
        with trio.fail_after(min(protocol.idle_s, FIRST_BYTE_S + 10.0)):
            raw = await reader.read(protocol.max_request_bytes)
        stats.count(protocol.id, received=reader.bytes_read)
        request = protocol.request.from_wire(raw)
    except FrameTooLarge as exc:
        await _reject(requests, exchange, PENALTY_OVERSIZED, "too_large", str(exc))
        return
    except (FrameError, MessageError, EOFError) as exc:
        reason = str(exc) or "stream ended before a request"
        await _reject(requests, exchange, PENALTY_MALFORMED, "bad_request", reason)
        return
    except _IdleStream:
        why = f"nothing sent within {FIRST_BYTE_S:g} s"
        await _reject(requests, exchange, PENALTY_IDLE, "idle", why)
        return
    except trio.TooSlowError:
        await _reject(requests, exchange, PENALTY_MALFORMED, "timeout", "request too slow")
        return
    try:
        with trio.fail_after(protocol.timeout_s):
            await handler(peer, request, exchange)
    except Refused as exc:
        stats.refused += 1
        await exchange.fail(exc.code, exc.message)
        return
    except trio.TooSlowError:
        await exchange.fail("timeout", f"the exchange lasted over {protocol.timeout_s:g} s")
        return
    except RequestFailed as exc:  # the other side went away or broke the protocol
        log.debug("exchange ended: %s", exc, extra={"protocol": protocol.id, "peer": peer})
        await exchange.reset()
        return
    except Exception:
        log.exception("exchange handler failed", extra={"protocol": protocol.id, "peer": peer})
        await exchange.fail("internal", "the handler failed")
        return
    except BaseException:
        await exchange.reset()
        raise
    stats.served += 1
    stats.by_protocol[protocol.id] = stats.by_protocol.get(protocol.id, 0) + 1
    await exchange.close()


async def _reject(
    requests: Requests, exchange: Exchange, points: float, code: str, why: str
) -> None:
    requests.statistics().malformed += 1
    await exchange.fail(code, why)
    await requests.host.penalize(exchange.peer, points, f"{exchange._protocol.id}: {why}")


@asynccontextmanager
async def open_exchange(
    requests: Requests,
    peer_id: str,
    protocol: ExchangeProtocol[Req],
    request: Req,
    timeout_s: float | None = None,
) -> AsyncIterator[Exchange]:
    """Open an exchange with ``peer_id`` and send ``request``; the block talks to
    the server through the `Exchange`. The stream is closed when the block ends
    and reset if it raises (cancellation included). The whole block is bounded
    by ``timeout_s`` (the protocol's by default): RequestTimeout past it."""
    stats = requests.statistics()
    stats.sent += 1
    limit = protocol.timeout_s if timeout_s is None else timeout_s
    stream = await requests.host.open_stream(peer_id, protocol.id)
    exchange = Exchange(requests, peer_id, stream, protocol)
    try:
        with trio.fail_after(limit if math.isfinite(limit) else 1e9):
            frame = encode_frame(request.to_wire(), protocol.max_request_bytes)
            await stream.write(frame)
            stats.count(protocol.id, sent=len(frame))
            yield exchange
    except trio.TooSlowError as exc:
        stats.failed += 1
        await exchange.reset()
        raise RequestTimeout(f"{protocol.id}: the exchange with {peer_id} ran over") from exc
    except BaseException:
        stats.failed += 1
        await exchange.reset()
        raise
    await exchange.close()
