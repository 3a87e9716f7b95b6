"""Marketplace: search with filters, sorts and pages; one listing with its
plans, releases, dependencies and the providers serving it. Buying a plan is a
POST form (CSRF-checked) that starts a background job, since the creator's
node and the ledger both take a while."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from mercato import MercatoError
from mercato.crdt import Query, QueryError

from ._app import redirect

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from ._app import Web
    from ._jobs import Job

PLAN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
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
    providers = (await web.api.tasks.providers(agent)).providers
    plans = shown.get("plans") or {}
    held: list[dict[str, Any]] = []
    mine = False
    if plans:
        held, mine = await _buyer(web, agent, publisher)
    return web.render(
        request,
        "listing.html",
        title=shown.get("title") or name,
        listing=shown,
        agent=agent,
        providers=providers,
        plans=sorted(plans.items()),
        held=held,
        can_buy=bool(plans) and not mine and not shown.get("deprecated"),
        published=request.query_params.get("published") == "1",
    )


async def _buyer(web: Web, agent: str, publisher: str) -> tuple[list[dict[str, Any]], bool]:
    """This node's licences of ``agent``, and whether its wallet is the creator's
    (it cannot buy from itself). A node without a wallet (a relay) holds none."""
    try:
        held = [x.model_dump() for x in (await web.api.commerce.licences()).licences]
        address = (await web.api.money.wallet()).address
    except MercatoError:
        return [], True
    return [x for x in held if x["agent"] == agent], address == publisher


async def buy(web: Web, request: Request) -> Response:
    publisher = request.path_params["publisher"]
    name = request.path_params["name"]
    form = await web.form(request)
    plan = form.get("plan", "")
    if not isinstance(plan, str) or not PLAN.fullmatch(plan):
        return web.render(
            request, "error.html", code=400, title="Buy", message="That is not a plan's name."
        )
    agent = f"{publisher}/{name}"
    page = f"/market/{publisher}/{name}"

    async def work(job: Job) -> dict[str, Any]:
        job.result["listing"] = page  # for the way back, should it fail
        job.step(f"asking the creator's node of {agent} for plan {plan}")
        bought = await web.api.commerce.buy(agent, plan, approved=True)  # the Buy button
        job.step(f"on the ledger: licence {bought.mint}")
        return {**bought.model_dump(), "listing": page}

    job = web.jobs.start("buy", f"Buy {plan} of {name}", work)
    return redirect(f"/jobs/{job.id}")


PAGES = (
    ("/market", market, ["GET"]),
    ("/market/{publisher}/{name}", listing, ["GET"]),
    ("/market/{publisher}/{name}/buy", buy, ["POST"]),
)
