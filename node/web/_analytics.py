"""Analytics page (placeholder: being written)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from ._app import Web


async def page(web: Web, request: Request) -> Response:
    return web.render(request, "error.html", title="Analytics", message="coming")


PAGES = (("/analytics", page, ["GET"]),)
