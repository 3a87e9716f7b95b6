"""The node's MCP server: mercato's tools for AI agents, over stdio or ``/mcp``.

`build_server` makes the server over a `Backend`: `DaemonBackend` reaches a
running daemon through its data dir (``mercato mcp``, stdio), `AppBackend` the
control API inside the daemon (``/mcp``, streamable HTTP, `McpEndpoint`).

Importing this package does not import the MCP SDK: `build_server` does, and
the daemon calls it on the first request to ``/mcp`` (see `McpEndpoint`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._backend import AppBackend as AppBackend
from ._backend import Backend as Backend
from ._backend import DaemonBackend as DaemonBackend
from ._http import PATH as PATH
from ._http import McpEndpoint as McpEndpoint

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer


def build_server(backend: Backend, name: str = "mercato") -> MCPServer:
    """The MCP server over ``backend``: every tool and resource registered.
    Imports the MCP SDK (ModuleNotFoundError if it is not installed)."""
    from ._tools import build_server as build

    return build(backend, name)


__all__ = ["PATH", "AppBackend", "Backend", "DaemonBackend", "McpEndpoint", "build_server"]
