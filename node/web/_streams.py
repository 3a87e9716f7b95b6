"""Live updates as server-sent events, and the page of a background job.

Each stream ends when the client goes (Starlette notices the disconnect) or
when the daemon stops (`Web.closing`). A message is one JSON object; pages
show its ``text`` as text.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import trio
from starlette.responses import Response, StreamingResponse

if TYPE_CHECKING:
    from starlette.requests import Request

    from ._app import Web

POLL_S = 0.5  # how often the event stream looks for new events
KEEPALIVE_S = 15.0


def sse(messages: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def encoded() -> AsyncIterator[bytes]:
        async for message in messages:
            yield f"data: {json.dumps(message)}\n\n".encode()

    return StreamingResponse(
        encoded(), media_type="text/event-stream", headers={"x-accel-buffering": "no"}
    )


def _whole(value: str | None, default: int = 0) -> int:
    return int(value) if value is not None and value.isdigit() and len(value) < 19 else default


async def events(web: Web, request: Request) -> Response:
    after = _whole(request.query_params.get("after"))

    async def messages() -> AsyncIterator[dict[str, Any]]:
        nonlocal after
        while not web.closing.is_set():
            page = await web.api.node.events(after=after, limit=100)
            for e in page.events:
                yield {"text": f"{e.ts} · {e.kind} · {json.dumps(e.data)}", "title": e.hash}
            after = page.next
            if not page.events:
                with trio.move_on_after(POLL_S):
                    await web.closing.wait()

    return sse(messages())


async def job_stream(web: Web, request: Request) -> Response:
    job = web.jobs.get(request.path_params["job"])
    if job is None:
        return Response("no such job", status_code=404, media_type="text/plain")

    async def messages() -> AsyncIterator[dict[str, Any]]:
        seen = -1
        while True:
            yield job.to_dict()
            if job.state != "running":
                return
            seen = job.version
            with trio.move_on_after(KEEPALIVE_S):
                async with trio.open_nursery() as nursery:

                    async def closing() -> None:
                        await web.closing.wait()
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(closing)
                    await job.wait_change(seen)
                    nursery.cancel_scope.cancel()
            if web.closing.is_set():
                return

    return sse(messages())


async def job_page(web: Web, request: Request) -> Response:
    job = web.jobs.get(request.path_params["job"])
    if job is None:
        return web.render(
            request,
            "error.html",
            code=404,
            title="Not found",
            message="There is no such job: jobs are kept until the daemon restarts.",
        )
    return web.render(request, f"job_{job.kind}.html", title=job.title, job=job)


PAGES = (
    ("/stream/events", events, ["GET"]),
    ("/stream/jobs/{job}", job_stream, ["GET"]),
    ("/jobs/{job}", job_page, ["GET"]),
)
