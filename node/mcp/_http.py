"""``/mcp`` on the control API: the MCP server over streamable HTTP, in the daemon.

The control API's guard checks the bearer token and bounds the body before a
request reaches it, as for every other route. The SDK's session manager keeps
each client's session; it runs in the daemon's nursery (`run`) for as long as
the API serves, and ends its sessions when the daemon stops.
"""

from __future__ import annotations

from typing import Any

import trio
from mcp.server.mcpserver import MCPServer

PATH = "/mcp"


class McpEndpoint:
    """An ASGI app answering ``PATH``, and the task that keeps its sessions."""

    def __init__(self, server: MCPServer, host: str) -> None:
        # The SDK checks Host and Origin against these (DNS rebinding): the API's
        # own address, on any port.
        self._app = server.streamable_http_app(streamable_http_path=PATH, host=host)
        self._manager = server.session_manager
        self._scope = trio.CancelScope()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._app(scope, receive, send)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep sessions until `close` (or cancelled)."""
        with self._scope:
            async with self._manager.run():
                task_status.started()
                await trio.sleep_forever()

    def close(self) -> None:
        """End every session now: the daemon is stopping, and must not wait on them."""
        self._scope.cancel()
