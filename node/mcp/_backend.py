"""How the MCP tools reach a node: the control API, in the daemon or over HTTP.

Both backends send the same routes' requests and get the same JSON back, so a
tool behaves the same over stdio (`mercato mcp`, a separate process) and over
streamable HTTP at ``/mcp`` (inside the daemon). An error answer is raised as
`ControlError` with its status and code, which the tools turn into messages a
model can act on.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

import anyio.to_thread
import httpx2

from .._errors import ControlError
from ..control import ControlClient

RUN_TIMEOUT_S = 900.0  # a paid run: quotes, a channel, the agent's own wall time
# Each tool call is an in-process request here: not worth an INFO line each.
logging.getLogger("httpx2").setLevel(logging.WARNING)


class Backend(Protocol):
    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """One control API request; the decoded JSON. ControlError on an error answer
        (DaemonNotRunning when no daemon answers)."""
        ...


class DaemonBackend:
    """A running daemon, found through its data dir (for `mercato mcp` over stdio).
    Every call runs the blocking `ControlClient` in a worker thread."""

    def __init__(self, client: ControlClient) -> None:
        self._client = client

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        return await anyio.to_thread.run_sync(self._client.request, method, path, body)


class AppBackend:
    """The control API's own ASGI app, in the daemon's process (for ``/mcp``): the
    same routes, guard and validation as over the network, without a socket."""

    def __init__(self, app: Any, token: str) -> None:
        self._http = httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app),
            base_url="http://mercato.local",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=RUN_TIMEOUT_S,
        )

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        response = await self._http.request(method, path, json=body)
        if response.status_code >= 400:
            try:
                err = response.json()["error"]
                message, code = str(err["message"]), str(err["code"])
            except (ValueError, KeyError, TypeError):
                message, code = response.text[:200], "error"
            raise ControlError(message, status=response.status_code, code=code)
        try:
            return response.json()
        except json.JSONDecodeError:
            return response.text

    async def aclose(self) -> None:
        await self._http.aclose()
