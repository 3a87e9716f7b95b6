"""Node: the builds stored and pinned, storage against the quota, the builds this
node keeps for the network, relay reservations, the configuration (read only)
and the log, live."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import trio
from starlette.responses import Response

from ._logtail import log_tail
from ._streams import sse

if TYPE_CHECKING:
    from starlette.requests import Request

    from ._app import Web

MAX_BUILDS = 200  # rows per builds table
LOG_LINES = 100  # lines the page shows before the stream adds more
POLL_S = 0.5  # how often the log stream looks for new lines


async def node_page(web: Web, request: Request) -> Response:
    api = web.api
    status = await api.node.status()
    p2p = status.p2p or {}
    stored: dict[str, Any] | None = None
    keeps: list[dict[str, Any]] = []
    if "builds" in status.services:  # a relay stores none
        shown = await api.builds.stored()
        stored = shown.model_dump()
        held = {b.cid: b for b in shown.builds}
        for cid in await api.builds.responsible():
            build = held.get(cid)
            if build is None:
                state = "not here yet: being fetched"
            elif build.complete:
                state = "held"
            else:
                state = f"partial: {build.have} of {build.chunks} chunks"
            keeps.append({"cid": cid, "state": state})
    lines, last = log_tail().tail(LOG_LINES)
    used, quota = (stored["used_bytes"], stored["quota_bytes"]) if stored else (0, 0)
    return web.render(
        request,
        "node.html",
        title="Node",
        status=status,
        stored=stored,
        builds=stored["builds"][:MAX_BUILDS] if stored else [],
        pinned=sum(b["pinned"] for b in stored["builds"]) if stored else 0,
        used=used,
        quota=quota,
        percent=round(100 * used / quota, 1) if quota else 0,
        keeps=keeps[:MAX_BUILDS],
        keeps_total=len(keeps),
        max_builds=MAX_BUILDS,
        relay=p2p.get("relay") or {},
        config=api.node.config_text(),
        log_lines=list(reversed(lines)),  # newest first, as the stream adds them
        log_last=last,
    )


def _whole(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() and len(value) < 19 else None


async def log_stream(web: Web, request: Request) -> Response:
    """The log lines after ``?after=N`` (else from now on), as server-sent events,
    until the client leaves or the daemon stops."""
    tail = log_tail()
    asked = _whole(request.query_params.get("after"))
    after = tail.last if asked is None else min(asked, tail.last)

    async def messages() -> AsyncIterator[dict[str, Any]]:
        nonlocal after
        while not web.closing.is_set():
            lines, after = tail.since(after)
            for line in lines:
                yield {"text": line}
            if not lines:
                with trio.move_on_after(POLL_S):
                    await web.closing.wait()

    return sse(messages())


PAGES = (
    ("/node", node_page, ["GET"]),
    ("/stream/log", log_stream, ["GET"]),
)
