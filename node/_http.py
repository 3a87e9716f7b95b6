"""A small HTTP/1.1 server on trio (h11), for the control API only.

One request per connection (``Connection: close``): the API's callers are the
CLI and scripts, not browsers. Every limit is explicit: header size, body size
(413), time to receive a request (408), concurrent connections.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11
import trio

log = logging.getLogger("mercato.api")

MAX_HEADER_BYTES = 16 * 1024
REQUEST_TIMEOUT_S = 10.0
"""A client has this long to send its whole request (slow clients get 408)."""
CONNECTION_TIMEOUT_S = 60.0
"""Hard bound on one connection, from accept to the last byte of the answer."""
MAX_CONNECTIONS = 64
_DRAIN_TIMEOUT_S = 1.0
_ACCEPT_BACKOFF_S = 0.1


class HttpError(Exception):
    """Raised by handlers (and the server) to answer with an error document."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """The body parsed as JSON; HttpError 400 if it is not."""
        try:
            return json.loads(self.body or b"null")
        except (ValueError, RecursionError):
            raise HttpError(400, "bad_json", "the request body is not valid JSON") from None


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"

    @classmethod
    def json(cls, status: int, obj: Any) -> Response:
        return cls(status, json.dumps(obj, indent=None).encode() + b"\n")

    @classmethod
    def error(cls, status: int, code: str, message: str) -> Response:
        return cls.json(status, {"error": {"code": code, "message": message}})


Handler = Callable[[Request], Awaitable[Response]]


class _BodyTooLarge(Exception):
    pass


class _HeadersTooLarge(Exception):
    pass


async def _next_event(stream: trio.abc.Stream, conn: h11.Connection) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await stream.receive_some(65536))


async def _read_request(stream: trio.abc.Stream, conn: h11.Connection, max_body: int) -> Request:
    event = await _next_event(stream, conn)
    if isinstance(event, h11.ConnectionClosed):
        raise trio.BrokenResourceError
    if not isinstance(event, h11.Request):
        raise h11.RemoteProtocolError("expected a request")
    size = len(event.target) + sum(len(k) + len(v) for k, v in event.headers)
    if size > MAX_HEADER_BYTES:
        raise _HeadersTooLarge
    headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise _BodyTooLarge
    body = bytearray()
    while True:
        part = await _next_event(stream, conn)
        if isinstance(part, h11.Data):
            body += part.data
            if len(body) > max_body:
                raise _BodyTooLarge
        elif isinstance(part, h11.EndOfMessage):
            break
        else:
            raise h11.RemoteProtocolError("connection closed mid-request")
    target = urlsplit(event.target.decode("latin-1"))
    return Request(
        method=event.method.decode(),
        path=target.path,
        query=dict(parse_qsl(target.query)),
        headers=headers,
        body=bytes(body),
    )


async def _send(stream: trio.abc.Stream, conn: h11.Connection, response: Response) -> None:
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        ("connection", "close"),
    ]
    try:
        await stream.send_all(conn.send(h11.Response(status_code=response.status, headers=headers)))
        await stream.send_all(conn.send(h11.Data(data=response.body)))
        await stream.send_all(conn.send(h11.EndOfMessage()))
    except h11.LocalProtocolError:
        # The connection is in a state where h11 will not respond; send raw.
        reason = b"Error"
        head = f"HTTP/1.1 {response.status} ".encode() + reason + b"\r\n"
        head += b"".join(f"{k}: {v}\r\n".encode() for k, v in headers) + b"\r\n"
        await stream.send_all(head + response.body)


async def _drain(stream: trio.abc.Stream, limit: int) -> None:
    """Read and drop what the client is still sending, so it sees our answer, not a reset."""
    with trio.move_on_after(_DRAIN_TIMEOUT_S):
        seen = 0
        while seen < limit:
            data = await stream.receive_some(65536)
            if not data:
                return
            seen += len(data)


async def _serve_connection(
    stream: trio.SocketStream, handler: Handler, max_body: int, request_timeout: float
) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
    try:
        try:
            with trio.fail_after(request_timeout):
                request = await _read_request(stream, conn, max_body)
        except _BodyTooLarge:
            await _send(
                stream,
                conn,
                Response.error(
                    413, "body_too_large", f"request bodies are limited to {max_body} bytes"
                ),
            )
            await stream.send_eof()
            await _drain(stream, 8 * max_body)
            return
        except _HeadersTooLarge:
            message = f"request line and headers are limited to {MAX_HEADER_BYTES} bytes"
            await _send(stream, conn, Response.error(431, "headers_too_large", message))
            return
        except h11.RemoteProtocolError as exc:
            status = 431 if "too long" in str(exc) or "exceed" in str(exc) else 400
            await _send(stream, conn, Response.error(status, "bad_request", str(exc)))
            return
        except trio.TooSlowError:
            await _send(stream, conn, Response.error(408, "timeout", "request took too long"))
            return
        try:
            response = await handler(request)
        except Exception:  # a handler's bug costs one answer, never the server
            log.exception("request failed", extra={"path": request.path})
            response = Response.error(500, "internal", "internal error: see the daemon's log")
        await _send(stream, conn, response)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the client went away; nothing to answer


class HttpServer:
    """Serves one handler on a loopback address.

    `serve` runs until cancelled, or until `close` has been called and every
    request in flight has been answered: so a graceful stop is `close()` then a
    deadline on the surrounding cancel scope.
    """

    def __init__(
        self,
        handler: Handler,
        host: str,
        port: int,
        *,
        max_body: int,
        request_timeout: float = REQUEST_TIMEOUT_S,
        connection_timeout: float = CONNECTION_TIMEOUT_S,
    ) -> None:
        self._handler = handler
        self._request_timeout = request_timeout
        self._connection_timeout = connection_timeout
        self._host, self._port = host, port
        self._max_body = max_body
        self._listeners: list[trio.SocketListener] = []
        self._slots = trio.Semaphore(MAX_CONNECTIONS)
        self._accept_failing = False

    async def bind(self) -> tuple[str, int]:
        """Open the listening sockets; OSError if the address is in use. Returns (host, port)."""
        self._listeners = await trio.open_tcp_listeners(self._port, host=self._host)
        host, port = self._listeners[0].socket.getsockname()[:2]
        return host, port

    async def serve(
        self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve (binding first if needed); report ``(host, port)`` once listening."""
        if not self._listeners:
            await self.bind()
        bound = self._listeners[0].socket.getsockname()[:2]
        try:
            async with trio.open_nursery() as nursery:
                for listener in self._listeners:
                    nursery.start_soon(self._accept_loop, listener, nursery)
                task_status.started((bound[0], bound[1]))
        finally:
            self.close()

    def close(self) -> None:
        """Stop accepting connections; requests in flight go on to their answer."""
        for listener in self._listeners:
            listener.socket.close()

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            # Take a slot before accepting: excess clients wait in the kernel's
            # backlog, holding no file descriptor of ours.
            await self._slots.acquire()
            try:
                stream = await listener.accept()
            except trio.ClosedResourceError:
                self._slots.release()
                return
            except OSError as exc:
                self._slots.release()
                # Out of file descriptors (EMFILE/ENFILE) or a transient error: back off, retry.
                if not self._accept_failing:
                    log.warning("accept failed; retrying", extra={"error": exc.strerror})
                self._accept_failing = True
                await trio.sleep(_ACCEPT_BACKOFF_S)
                continue
            self._accept_failing = False
            nursery.start_soon(self._serve_one, stream)

    async def _serve_one(self, stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(self._connection_timeout):
                await _serve_connection(
                    stream, self._handler, self._max_body, self._request_timeout
                )
        finally:
            self._slots.release()
            await trio.aclose_forcefully(stream)
