"""The localnet's WebSocket endpoint: Solana's PubSub API (JSON-RPC in text frames)
as a plain ASGI app over a `PubSubHub`, and the listener that serves it.

Each connection is one hub `Session`: frames are answered in order, one at a
time, and notifications are sent as the hub queues them. A connection past the
hub's ``max_connections`` is refused (HTTP 403); a frame over ``max_frame``
bytes closes the connection (1009, by Hypercorn); a client that does not read
is dropped (1008 once its queue is over its bounds; and the kernel aborts a
connection whose unread data has not moved for ``SEND_TIMEOUT_S``). When the
hub closes every connection is closed with 1001 (going away).
"""

from __future__ import annotations

import json
import socket
from typing import Any

import trio

from mercato.settlement import PubSubHub, PubSubSession

from ._server import HttpListener

SEND_TIMEOUT_S = 5.0


class PubSubApp:
    """A plain ASGI app: WebSocket connections speaking Solana's PubSub to ``hub``.

    Plain HTTP requests get 400 (only the upgrade is served)."""

    def __init__(self, hub: PubSubHub) -> None:
        self._hub = hub

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # nothing to set up or tear down
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
        elif scope["type"] == "http":
            error = {"code": -32600, "message": "this port serves WebSocket (PubSub) only"}
            body = json.dumps({"jsonrpc": "2.0", "id": None, "error": error}).encode()
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 400, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif scope["type"] == "websocket":
            await self._connection(receive, send)

    async def _connection(self, receive: Any, send: Any) -> None:
        """One WebSocket, until either side closes it; cancellation drops it
        without a close frame."""
        if (await receive())["type"] != "websocket.connect":
            return
        session = self._hub.open_session()
        if session is None:  # too many connections, or stopping: 403
            await send({"type": "websocket.close", "code": 1013})
            return
        try:
            await send({"type": "websocket.accept"})
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_send_all, session, send, nursery.cancel_scope)
                while True:
                    message = await receive()
                    if message["type"] != "websocket.receive":
                        break  # websocket.disconnect: the client is gone
                    text = message.get("text")
                    await session.handle(text if text is not None else message.get("bytes") or b"")
                nursery.cancel_scope.cancel()
        finally:
            session.close()


async def _send_all(session: PubSubSession, send: Any, done: trio.CancelScope) -> None:
    """Send the session's frames; once it ends, close the WebSocket with its code."""
    while (message := await session.next_message()) is not None:
        await send({"type": "websocket.send", "text": message})
    await send(
        {"type": "websocket.close", "code": session.close_code, "reason": session.close_reason}
    )
    done.cancel()


class Listener(HttpListener):
    """An `HttpListener` that can give its socket back unserved (the localnet binds
    two ports, and tries again when the second is taken)."""

    def release(self) -> None:
        """Close the socket `bind` opened, if `serve` never ran."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


class WsListener(Listener):
    """The listener for `PubSubApp`: frames of at most ``max_frame`` bytes, and a
    connection whose peer reads nothing for ``SEND_TIMEOUT_S`` is aborted by
    the kernel (TCP_USER_TIMEOUT), so a sender blocked on it cannot stay forever."""

    def __init__(self, app: PubSubApp, host: str, port: int, *, max_frame: int, grace_s: float):
        super().__init__(app, host, port, grace_s=grace_s)
        self._config.websocket_max_message_size = max_frame

    def bind(self) -> tuple[str, int]:
        bound = super().bind()
        assert self._socket is not None
        if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux: accepted sockets inherit it
            timeout_ms = int(SEND_TIMEOUT_S * 1000)
            self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, timeout_ms)
        return bound
