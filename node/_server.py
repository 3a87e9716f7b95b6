"""HTTP for the daemon's ASGI apps (the control API, the localnet's JSON-RPC):
Hypercorn's trio worker, inside the caller's nursery.

`HttpListener.bind` opens the socket first, so a port in use is an error
before anything else starts; `serve` then runs Hypercorn on it until
`close` (or cancellation). Limits: a connection that has not sent a whole
request head within ``header_timeout`` is closed (so idle connections cost a
few seconds, never a slot), request heads are bounded, and there is no cap on
how long a request may take once it is in: a long task's answer is never cut.
Bodies are bounded by the app (see ``control/_app.py``).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app

HEADER_TIMEOUT_S = 5.0
MAX_HEAD_BYTES = 16 * 1024
BACKLOG = 1024

_SERVER_LOG = logging.getLogger("mercato.http.server")
_SERVER_LOG.setLevel(logging.WARNING)  # its "Running on" line repeats the node's "ready"


class HttpListener:
    """One loopback listening socket served by Hypercorn."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        *,
        header_timeout: float = HEADER_TIMEOUT_S,
        grace_s: float = 3.0,
    ) -> None:
        self._app = app
        self._host, self._port = host, port
        self._socket: socket.socket | None = None
        self._stop = trio.Event()
        self._config = HypercornConfig()
        # Hypercorn's keep-alive timer also runs from accept to the first
        # request head: a silent or slow connection is dropped after it.
        self._config.keep_alive_timeout = header_timeout
        self._config.h11_max_incomplete_size = MAX_HEAD_BYTES
        self._config.graceful_timeout = grace_s
        self._config.backlog = BACKLOG
        self._config.errorlog = _SERVER_LOG
        self._config.accesslog = None

    def bind(self) -> tuple[str, int]:
        """Open the listening socket; OSError if the address is in use. Returns (host, port)."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((self._host, self._port))
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._socket = sock
        host, port = sock.getsockname()[:2]
        return host, port

    def close(self) -> None:
        """Stop taking connections; requests in flight get ``grace_s`` to be answered."""
        self._stop.set()

    async def serve(
        self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve (binding first if needed) until `close` or cancellation; report
        ``(host, port)`` once listening. The socket is closed on return."""
        if self._socket is None:
            self.bind()
        sock = self._socket
        assert sock is not None
        bound = sock.getsockname()[:2]
        try:
            await worker_serve(
                wrap_app(self._app, self._config.wsgi_max_body_size, "asgi"),
                self._config,
                sockets=Sockets(secure_sockets=[], insecure_sockets=[sock], quic_sockets=[]),
                shutdown_trigger=self._stop.wait,
                task_status=_Relay(task_status, (bound[0], bound[1])),
            )
        finally:
            sock.close()
            self._socket = None


class _Relay:
    """Hypercorn reports its bind strings; our callers want (host, port)."""

    def __init__(self, task_status: trio.TaskStatus[tuple[str, int]], bound: tuple[str, int]):
        self._task_status = task_status
        self._bound = bound

    def started(self, value: Any = None) -> None:
        self._task_status.started(self._bound)
