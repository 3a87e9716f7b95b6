"""Marketplace: search with filters, sorts and pages; one listing with its
releases, dependencies and the providers serving it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mercato.crdt import Query, QueryError

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from ._app import Web

PAGE_SIZE = 20
KINDS = ("agent", "model")
SORTS = (("relevance", "Best match"), ("price", "Lowest price"), ("newest", "Newest"))
TEXT_FIELDS = {"text": 512, "capability": 64, "tag": 64, "cursor": 512}


def _filters(request: Request) -> tuple[dict[str, Any], dict[str, str]]:
    """The search form's values, and an error per wrong field."""
    params = request.query_params
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, limit in TEXT_FIELDS.items():
        value = params.get(name, "").strip()
        if len(value) > limit:
            errors[name] = f"at most {limit} characters"
        values[name] = value
    kind = params.get("kind", "")
    if kind and kind not in KINDS:
        errors["kind"] = f"one of {', '.join(KINDS)}"
    values["kind"] = kind
    sort = params.get("sort", "relevance")
    if sort not in dict(SORTS):
        errors["sort"] = "relevance, price or newest"
    values["sort"] = sort
    price = params.get("max_price", "").strip()
    values["max_price"] = price
    if price and (not price.isdigit() or len(price) > 16):
        errors["max_price"] = "a whole number of lamports, such as 5000"
    return values, errors


async def market(web: Web, request: Request) -> Response:
    values, errors = _filters(request)
    page = None
    if not errors:
        query = Query(
            text=values["text"],
            kind=values["kind"] or None,
            capability=values["capability"] or None,
            tag=values["tag"] or None,
            max_price=int(values["max_price"]) if values["max_price"] else None,
            sort=values["sort"] if values["text"] or values["sort"] != "relevance" else "newest",
            limit=PAGE_SIZE,
            cursor=values["cursor"] or None,
        )
        try:
            page = await web.api.registry.search(query)
        except QueryError as exc:
            field = "cursor" if "cursor" in str(exc) else "text"
            errors[field] = str(exc)
    kept = {k: v for k, v in values.items() if v and k != "cursor"}
    return web.render(
        request,
        "market.html",
        code=400 if errors else 200,
        title="Marketplace",
        values=values,
        errors=errors,
        kinds=[("", "Any"), *[(k, k) for k in KINDS]],
        sorts=SORTS,
        page=page,
        kept=kept,
    )


async def listing(web: Web, request: Request) -> Response:
    publisher = request.path_params["publisher"]
    name = request.path_params["name"]
    shown = (await web.api.registry.show(publisher, name)).model_dump()
    agent = f"{publisher}/{name}"
    providers = web.api.tasks.providers(agent).providers
    return web.render(
        request,
        "listing.html",
        title=shown.get("title") or name,
        listing=shown,
        agent=agent,
        providers=providers,
        published=request.query_params.get("published") == "1",
    )


PAGES = (
    ("/market", market, ["GET"]),
    ("/market/{publisher}/{name}", listing, ["GET"]),
)
