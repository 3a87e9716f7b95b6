"""``/mcp`` on the control API: the MCP server over streamable HTTP, in the daemon.

The control API's guard checks the bearer token and bounds the body before a
request reaches it, as for every other route. The SDK's session manager keeps
each client's session; it runs in the daemon's nursery (`run`) for as long as
the API serves, and ends its sessions when the daemon stops.

Given a factory rather than a server, the endpoint builds the server on the
first request to ``/mcp``: the SDK (and what it pulls in: about 20 MB resident)
is imported then, in a worker thread, never by a daemon nobody asks for MCP.
That the SDK is installed is still checked when the endpoint is made, so a
missing one stops the daemon at start-up as it did, not at the first request.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

PATH = "/mcp"
SDK = "mcp"
"""The official MCP SDK's import name (the ``mcp`` distribution)."""


def require_sdk() -> None:
    """Raise ModuleNotFoundError, saying what to install, if the SDK is not installed
    (without importing it)."""
    if importlib.util.find_spec(SDK) is None:
        raise ModuleNotFoundError(
            f"the MCP SDK (import name {SDK!r}) is not installed, and the control API "
            "serves MCP at /mcp with it: install mercato's dependencies again "
            "(pip install 'mcp>=2.3,<2.4')",
            name=SDK,
        )


class McpEndpoint:
    """An ASGI app answering ``PATH``, and the task that keeps its sessions.

    ``server`` is the MCP server, or a function that builds it: then it is built
    on the first request (`run` must be running by then)."""

    def __init__(self, server: MCPServer | Callable[[], MCPServer], host: str) -> None:
        # The SDK checks Host and Origin against ``host`` (DNS rebinding): the API's
        # own address, on any port.
        require_sdk()
        self._server = server
        self._host = host
        self._app: Any = None
        self._lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._scope = trio.CancelScope()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        app = self._app if self._app is not None else await self._start()
        await app(scope, receive, send)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep sessions until `close` (or cancelled). A server given as itself
        (not a factory) is started at once."""
        with self._scope:
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    if not callable(self._server):
                        await self._start()
                    task_status.started()
                    await trio.sleep_forever()
            finally:
                self._nursery = None

    def close(self) -> None:
        """End every session now: the daemon is stopping, and must not wait on them."""
        self._scope.cancel()

    async def _start(self) -> Any:
        """Build the server (once) and start its session manager in `run`'s nursery."""
        async with self._lock:
            if self._app is not None:
                return self._app
            if self._nursery is None:
                raise RuntimeError("the MCP endpoint is not running")
            server = self._server
            if callable(server):
                # The SDK's import takes a while: not on the event loop.
                await trio.to_thread.run_sync(importlib.import_module, f"{SDK}.server.mcpserver")
                server = server()
            app = server.streamable_http_app(streamable_http_path=PATH, host=self._host)
            await self._nursery.start(self._keep_sessions, server.session_manager)
            self._server = server
            self._app = app
            return app

    @staticmethod
    async def _keep_sessions(
        manager: StreamableHTTPSessionManager,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with manager.run():
            task_status.started()
            await trio.sleep_forever()
