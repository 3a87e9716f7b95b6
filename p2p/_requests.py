"""The framework for the project's own request/response protocols.

One request, one response, one stream. On a stream opened with the protocol's
versioned id (``/mercato/<name>/<semver>``)::

    client -> server   frame(request message)            then closes its write side
    server -> client   frame({"ok": response message})   or
                       frame({"err": {"code": ..., "message": ...}})

Frames are varint-length-prefixed canonical CBOR (see _wire.py), bounded by
the protocol's ``max_request_bytes`` / ``max_response_bytes``. The server
gives a stream FIRST_BYTE_S to start its request and then time for its size
at MIN_REQUEST_RATE (never more than ``timeout_s``): a stream that sends
nothing holds a slot for seconds, not for a long protocol's ``timeout_s``, and
costs its peer PENALTY_IDLE (a handful and it is banned). The client gives the
server ``timeout_s`` for the whole exchange. The explicit response frame matters:
py-libp2p reports a reset stream as a clean end of stream to a reader.

A peer that sends a malformed, oversized or late request gets an error
response (or a reset), is penalised, and is banned past the host's limit; a
server that answers with garbage is penalised the same way by the client.

Errors seen by a caller of `Requests.request`::

    P2PError
    ├── DialError / PeerBanned   (_host.py) the peer cannot be reached
    └── RequestFailed            the exchange did not complete
        ├── RequestTimeout       no complete response within timeout_s
        ├── BadResponse          the response was malformed (peer penalised)
        └── RemoteError          the peer answered with an error: .code, .message

A handler answers with an error by raising `Refused(code, message)`; any
other exception becomes ``internal``. Cancellation of the caller closes the
stream; it is never turned into an error response.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import trio

from ._errors import P2PError
from ._host import P2PHost
from ._messages import Message, MessageError
from ._trio_util import TokenBucket, prune_buckets
from ._wire import FrameError, FrameReader, FrameTooLarge, encode_frame

log = logging.getLogger("mercato.p2p")

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)

PENALTY_MALFORMED = 25.0
PENALTY_OVERSIZED = 50.0
PENALTY_SLOW = 10.0
PENALTY_FLOOD = 1.0
PENALTY_IDLE = 25.0  # four or five idle streams within a minute and a peer is banned
MAX_CONCURRENT_PER_PROTOCOL = 64
MAX_CONCURRENT_PER_PEER = 8
FIRST_BYTE_S = 5.0
MIN_REQUEST_RATE = 256 * 1024  # bytes per second, once a request has started
READ_GRACE_S = 2.0  # the least time a started request gets to arrive whole
_ERROR_TEXT = 512


class RequestFailed(P2PError):
    """A request did not complete."""


class RequestTimeout(RequestFailed):
    """No complete response arrived in time."""


class BadResponse(RequestFailed):
    """The peer's response broke the protocol."""


class RemoteError(RequestFailed):
    """The peer answered with an error: ``str()`` is ``code: message``, the code once.

    Show the error with ``str(exc)``, or ``exc.message`` where the code is said
    otherwise; never the code followed by ``str(exc)``, which says it twice.
    """

    def __init__(self, code: str, message: str) -> None:
        # A peer that relays an error it got (a sub-call's, say) may send its
        # whole text, code and all: keep the code once.
        while code and message.startswith(f"{code}: "):
            message = message[len(code) + 2 :]
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


class Refused(P2PError):
    """Raised by a handler to answer with an error ``code`` and ``message``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class RequestProtocol(Generic[Req, Resp]):
    """A request/response protocol: its versioned id, message types and bounds."""

    id: str
    request: type[Req]
    response: type[Resp]
    max_request_bytes: int = 64 * 1024
    max_response_bytes: int = 1024 * 1024
    timeout_s: float = 10.0
    rate_per_s: float = 50.0
    """Requests each peer may make of this protocol per second (bursts of twice that)."""


class _IdleStream(Exception):
    """The stream sent nothing within its first-byte deadline."""


class _StreamBytes:
    """Adapts a libp2p stream to FrameReader: end of stream reads as b"".

    With ``first_byte_s``, the first read must bring something within that
    many seconds (`_IdleStream` otherwise)."""

    def __init__(self, stream: Any, first_byte_s: float | None = None) -> None:
        self._stream = stream
        self._first_byte_s = first_byte_s

    async def read(self, n: int) -> bytes:
        from libp2p.network.stream.exceptions import StreamEOF

        try:
            if self._first_byte_s is None:
                return await self._stream.read(n)
            with trio.move_on_after(self._first_byte_s) as waited:
                data: bytes = await self._stream.read(n)
            if waited.cancelled_caught:
                raise _IdleStream
            self._first_byte_s = None
            return data
        except StreamEOF:
            return b""


@dataclass
class RequestStatistics:
    served: int = 0
    refused: int = 0
    malformed: int = 0
    sent: int = 0
    failed: int = 0
    bytes_out: dict[str, int] = field(default_factory=dict)
    """Bytes of frames sent (requests made, answers given), by protocol id."""
    bytes_in: dict[str, int] = field(default_factory=dict)
    """Bytes of frames received, by protocol id."""

    def count(self, protocol: str, sent: int = 0, received: int = 0) -> None:
        self.bytes_out[protocol] = self.bytes_out.get(protocol, 0) + sent
        self.bytes_in[protocol] = self.bytes_in.get(protocol, 0) + received

    by_protocol: dict[str, int] = field(default_factory=dict)


class Requests:
    """Serves and sends request/response protocols over one host."""

    def __init__(self, host: P2PHost) -> None:
        self._host = host
        self._stats = RequestStatistics()
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._active: dict[str, int] = {}

    def statistics(self) -> RequestStatistics:
        return self._stats

    @property
    def host(self) -> P2PHost:
        return self._host

    def serve_exchange(self, protocol: Any, handler: Any) -> None:
        """Answer an exchange protocol (`_exchange.py`) with ``handler(peer, request,
        exchange)``."""
        from ._exchange import serve_exchange

        serve_exchange(self, protocol, handler)

    def exchange(
        self, peer_id: str, protocol: Any, request: Message, timeout_s: float | None = None
    ) -> Any:
        """``async with requests.exchange(peer, protocol, request) as exchange:`` (see
        `_exchange.open_exchange`)."""
        from ._exchange import open_exchange

        return open_exchange(self, peer_id, protocol, request, timeout_s)

    # -- serving ---------------------------------------------------------------

    def serve(
        self,
        protocol: RequestProtocol[Req, Resp],
        handler: Callable[[str, Req], Awaitable[Resp]],
    ) -> None:
        """Answer ``protocol`` with ``handler(peer_id, request)``."""
        slots = trio.Semaphore(MAX_CONCURRENT_PER_PROTOCOL)

        async def on_stream(peer: str, stream: Any) -> None:
            async with self.admitted(peer, stream, protocol, slots) as admitted:
                if admitted:
                    await self._serve_one(protocol, handler, peer, stream)

        self._host.set_stream_handler(protocol.id, on_stream)

    @asynccontextmanager
    async def admitted(
        self, peer: str, stream: Any, protocol: Any, slots: trio.Semaphore
    ) -> AsyncIterator[bool]:
        """Whether ``peer`` may open one more stream of ``protocol`` now (its rate,
        its streams at once, the protocol's ``slots``); a stream turned away is
        answered ``busy`` (a flood also costs the peer PENALTY_FLOOD). The slot is
        held until the block ends."""
        prune_buckets(self._buckets)
        burst = 2 * protocol.rate_per_s
        bucket = self._buckets.setdefault((peer, protocol.id), TokenBucket(burst))
        if not bucket.take(protocol.rate_per_s, burst):
            await self._reply(stream, protocol, error=("busy", "too many requests; slow down"))
            await self._host.penalize(peer, PENALTY_FLOOD, f"{protocol.id}: request flood")
            yield False
            return
        # Per peer first, so that one peer cannot take every slot from the others.
        if self._active.get(peer, 0) >= MAX_CONCURRENT_PER_PEER:
            await self._reply(stream, protocol, error=("busy", "too many requests at once"))
            yield False
            return
        try:
            slots.acquire_nowait()
        except trio.WouldBlock:
            await self._reply(stream, protocol, error=("busy", "too many requests; retry later"))
            yield False
            return
        self._active[peer] = self._active.get(peer, 0) + 1
        try:
            yield True
        finally:
            slots.release()
            _decrement(self._active, peer)

    async def _serve_one(
        self,
        protocol: RequestProtocol[Req, Resp],
        handler: Callable[[str, Req], Awaitable[Resp]],
        peer: str,
        stream: Any,
    ) -> None:
        # The first byte's deadline comes first, so an idle stream is told apart.
        sending_s = max(READ_GRACE_S, protocol.max_request_bytes / MIN_REQUEST_RATE)
        reading_s = min(protocol.timeout_s, FIRST_BYTE_S + sending_s)
        try:
            reader = FrameReader(_StreamBytes(stream, first_byte_s=FIRST_BYTE_S))
            with trio.fail_after(reading_s):
                raw = await reader.read(protocol.max_request_bytes)
            self._stats.count(protocol.id, received=reader.bytes_read)
            request = protocol.request.from_wire(raw)
        except FrameTooLarge as exc:
            await self._reject(peer, stream, protocol, PENALTY_OVERSIZED, "too_large", str(exc))
            return
        except (FrameError, MessageError, EOFError) as exc:
            reason = str(exc) or "stream ended before a request"
            await self._reject(peer, stream, protocol, PENALTY_MALFORMED, "bad_request", reason)
            return
        except _IdleStream:
            why = f"nothing sent within {FIRST_BYTE_S:g} s"
            await self._reject(peer, stream, protocol, PENALTY_IDLE, "idle", why)
            return
        except trio.TooSlowError:
            await self._reject(peer, stream, protocol, PENALTY_SLOW, "timeout", "request too slow")
            return
        try:
            response = await handler(peer, request)
        except Refused as exc:
            self._stats.refused += 1
            await self._reply(stream, protocol, error=(exc.code, exc.message))
            return
        except Exception:
            log.exception("request handler failed", extra={"protocol": protocol.id, "peer": peer})
            await self._reply(stream, protocol, error=("internal", "the handler failed"))
            return
        self._stats.served += 1
        self._stats.by_protocol[protocol.id] = self._stats.by_protocol.get(protocol.id, 0) + 1
        await self._reply(stream, protocol, response=response)

    async def _reject(
        self,
        peer: str,
        stream: Any,
        protocol: RequestProtocol[Any, Any],
        points: float,
        code: str,
        why: str,
    ) -> None:
        self._stats.malformed += 1
        await self._reply(stream, protocol, error=(code, why))
        await self._host.penalize(peer, points, f"{protocol.id}: {why}")

    async def _reply(
        self,
        stream: Any,
        protocol: RequestProtocol[Any, Any],
        response: Message | None = None,
        error: tuple[str, str] | None = None,
    ) -> None:
        sent = await _answer(stream, protocol, response, error)
        self._stats.count(protocol.id, sent=sent)

    # -- sending ---------------------------------------------------------------

    async def request(
        self,
        peer_id: str,
        protocol: RequestProtocol[Req, Resp],
        request: Req,
        timeout_s: float | None = None,
    ) -> Resp:
        """Send ``request`` to ``peer_id`` and return its response (see the module docstring).

        ``timeout_s`` replaces the protocol's for this exchange (a long task).
        On any failure, cancellation included, the stream is reset.
        """
        self._stats.sent += 1
        stream = await self._host.open_stream(peer_id, protocol.id)
        timeout = protocol.timeout_s if timeout_s is None else timeout_s
        try:
            with trio.fail_after(timeout):
                frame = encode_frame(request.to_wire(), protocol.max_request_bytes)
                await stream.write(frame)
                self._stats.count(protocol.id, sent=len(frame))
                await stream.close()  # half-close: the request is complete
                reader = FrameReader(_StreamBytes(stream))
                raw = await reader.read(protocol.max_response_bytes)
                self._stats.count(protocol.id, received=reader.bytes_read)
        except BaseException as exc:
            self._stats.failed += 1
            with trio.CancelScope(shield=True), suppress(Exception):
                await stream.reset()
            failure = await self._failure(peer_id, protocol, exc, timeout)
            if failure is exc:
                raise
            raise failure from exc
        return await self._parse_response(peer_id, protocol, raw)

    async def _failure(
        self,
        peer_id: str,
        protocol: RequestProtocol[Any, Any],
        exc: BaseException,
        waited_s: float,
    ) -> BaseException:
        """The error to raise for a failed exchange (Cancelled and our own pass through)."""
        if isinstance(exc, trio.TooSlowError):
            return RequestTimeout(
                f"{protocol.id}: no response from {peer_id} within {waited_s:g} s"
            )
        if isinstance(exc, EOFError):
            # Ended before any response: the peer went away or reset the stream, which
            # py-libp2p reports as an end of stream. No proof of malice, no penalty.
            return RequestFailed(f"{protocol.id}: {peer_id} closed the stream without answering")
        if isinstance(exc, FrameError):
            await self._host.penalize(peer_id, PENALTY_MALFORMED, f"{protocol.id}: bad response")
            return BadResponse(f"{protocol.id}: bad response from {peer_id}: {exc}")
        if isinstance(exc, P2PError) or not isinstance(exc, Exception):
            return exc  # ours, or Cancelled and friends: raised as they are
        return RequestFailed(f"{protocol.id}: exchange with {peer_id} failed: {exc!r}")

    async def _parse_response(
        self, peer_id: str, protocol: RequestProtocol[Req, Resp], raw: Any
    ) -> Resp:
        try:
            if isinstance(raw, dict) and set(raw) == {"ok"}:
                return protocol.response.from_wire(raw["ok"])
            if isinstance(raw, dict) and set(raw) == {"err"} and isinstance(raw["err"], dict):
                code, message = raw["err"].get("code"), raw["err"].get("message")
                if isinstance(code, str) and isinstance(message, str):
                    raise RemoteError(code[:64], message[:_ERROR_TEXT])
            raise MessageError("expected {'ok': ...} or {'err': {code, message}}")
        except MessageError as exc:
            self._stats.failed += 1
            await self._host.penalize(peer_id, PENALTY_MALFORMED, f"{protocol.id}: bad response")
            raise BadResponse(f"{protocol.id}: bad response from {peer_id}: {exc}") from exc


K = TypeVar("K")


def _decrement(counts: dict[K, int], key: K) -> None:
    counts[key] -= 1
    if not counts[key]:
        del counts[key]


async def _answer(
    stream: Any,
    protocol: RequestProtocol[Any, Any],
    response: Message | None = None,
    error: tuple[str, str] | None = None,
) -> int:
    """Write the one response frame and close; reset the stream if that fails.

    Returns the bytes written (0 if it failed)."""
    if response is not None:
        body: dict[str, Any] = {"ok": response.to_wire()}
    else:
        code, message = error or ("internal", "")
        body = {"err": {"code": code, "message": message[:_ERROR_TEXT]}}
    try:
        with trio.fail_after(protocol.timeout_s):
            frame = encode_frame(body, protocol.max_response_bytes)
            await stream.write(frame)
            await stream.close()
    except Exception:
        with suppress(Exception):
            await stream.reset()
        return 0
    return len(frame)
