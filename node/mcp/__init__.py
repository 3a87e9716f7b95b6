"""The node's MCP server: mercato's tools for AI agents, over stdio or ``/mcp``.

`build_server` makes the server over a `Backend`: `DaemonBackend` reaches a
running daemon through its data dir (``mercato mcp``, stdio), `AppBackend` the
control API inside the daemon (``/mcp``, streamable HTTP, `McpEndpoint`).
"""

from ._backend import AppBackend as AppBackend
from ._backend import Backend as Backend
from ._backend import DaemonBackend as DaemonBackend
from ._http import PATH as PATH
from ._http import McpEndpoint as McpEndpoint
from ._tools import build_server as build_server

__all__ = ["PATH", "AppBackend", "Backend", "DaemonBackend", "McpEndpoint", "build_server"]
