"""Home: this node on the network: who it is, its peers and relays, the
registry's size, and the event log as it grows."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from ._app import Web

RECENT_EVENTS = 30


async def home(web: Web, request: Request) -> Response:
    api = web.api
    status = await api.node.status()
    p2p = status.p2p or {}
    peers = api.node.peers().peers if "p2p" in status.services else []
    counts = await api.registry.counts() if "registry" in status.services else {}
    events = await api.node.events(after=max(status.events.count - RECENT_EVENTS, 0), limit=100)
    return web.render(
        request,
        "home.html",
        title="Network",
        status=status,
        p2p=p2p,
        relay=p2p.get("relay") or {},
        peers=peers,
        counts=counts,
        events=list(reversed(events.events)),
        last_event=events.next,
    )


PAGES = (("/", home, ["GET"]),)
