"""`mercato mcp`: the node's MCP server over stdio, for desktop MCP clients."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import click

from mercato.node import ControlClient

from ._common import data_dir_option, resolve

RUN_TIMEOUT_S = 900.0  # a paid run may take minutes: quotes, a channel, the agent


@click.command("mcp")
@data_dir_option
def mcp(data_dir: Path | None) -> None:
    """Serve mercato's MCP tools over stdio (for Claude Desktop and other MCP clients).

    It talks to the daemon running on the data dir through its control API and
    starts none: with no daemon running, every tool answers an error saying how
    to start one. The same tools are served over streamable HTTP at /mcp on the
    daemon's control API.

    \b
    Example:
      mercato mcp --data-dir ~/.local/share/mercato
      # in a desktop client's configuration:
      {"mcpServers": {"mercato": {"command": "mercato",
                                  "args": ["mcp", "--data-dir", "/home/me/.local/share/mercato"]}}}
    """
    from mercato.node.mcp import DaemonBackend, build_server

    # stdout is the protocol: the SDK's and our logs go to stderr, warnings only.
    logging.basicConfig(level=logging.WARNING)
    client = ControlClient(resolve(data_dir), timeout=RUN_TIMEOUT_S)
    server = build_server(DaemonBackend(client))
    anyio.run(server.run_stdio_async, backend="trio")
