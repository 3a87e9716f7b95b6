"""Analytics for creators: per listing, the runs this node saw (as user and as
provider), their revenue, latency percentiles, success rate, and the providers
serving it now; the listings this node's accounts publish come first. Charts
of runs and revenue per day."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from mercato import MercatoError
from mercato.crdt import Query

from ._charts import bar_chart, daily, line_chart, summary
from ._format import sol

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from ._app import Web

LOG_ROWS = 5_000  # the newest rows counted: the facade builds each on the event loop
MAX_LISTINGS = 100
RUNS = "Runs per day"
REVENUE = "Revenue per day"


def percentile(values: list[int], share: float) -> int | None:
    """Nearest-rank percentile of ``values`` (sorted), None if there are none."""
    if not values:
        return None
    rank = max(math.ceil(share * len(values)), 1)
    return values[rank - 1]


def _sol(value: float) -> str:
    return sol(int(value))


def _count(value: float) -> str:
    return f"{value:,.0f}"


async def _own_listings(web: Web) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The listings this node's accounts publish, by PUBLISHER/NAME; and the accounts."""
    keys = await web.api.node.keys_list()
    accounts = [k.address for k in keys.keys if k.kind == "account"]
    own: dict[str, dict[str, Any]] = {}
    for address in accounts:
        page = await web.api.registry.search(Query(publisher=address, sort="newest", limit=100))
        for r in page.results:
            own[f"{r['publisher']}/{r['name']}"] = r
    return own, accounts


def _stats(sides: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [s for s in sides if s["status"] == "ok"]
    walls = sorted(s["wall_ms"] for s in ok)
    return {
        "runs": len(sides),
        "ok": len(ok),
        "revenue": sum(s["price"] for s in ok),
        "success": round(100 * len(ok) / len(sides)) if sides else None,
        "p50": percentile(walls, 0.50),
        "p90": percentile(walls, 0.90),
        "p99": percentile(walls, 0.99),
        "as_user": sum(s["role"] == "user" for s in sides),
        "as_provider": sum(s["role"] == "provider" for s in sides),
    }


async def analytics(web: Web, request: Request) -> Response:
    log = await web.api.tasks.recent(LOG_ROWS)
    seen: dict[str, dict[str, Any]] = {}  # one side per task: both sides are one run
    for side in log.tasks:
        seen.setdefault(side.id, side.model_dump())
    by_agent: dict[str, list[dict[str, Any]]] = {}
    for t in seen.values():
        by_agent.setdefault(t["agent"], []).append(t)
    own, accounts = await _own_listings(web)
    agents = sorted(own, key=lambda a: (-len(by_agent.get(a, [])), a))
    agents += sorted((a for a in by_agent if a not in own), key=lambda a: -len(by_agent[a]))
    rows = []
    for agent in agents[:MAX_LISTINGS]:
        listing = own.get(agent)
        try:
            serving = len((await web.api.tasks.providers(agent, look_up=False)).providers)
        except MercatoError:  # a malformed agent name in an old log row
            serving = None
        rows.append(
            {
                "agent": agent,
                "title": listing.get("title") if listing else None,
                "own": listing is not None,
                "providers": serving,
                **_stats(by_agent.get(agent, [])),
            }
        )
    ok = [t for t in seen.values() if t["status"] == "ok"]
    runs = daily((t["created"], 1.0) for t in seen.values())
    revenue = daily((t["created"], float(t["price"])) for t in ok)
    return web.render(
        request,
        "analytics.html",
        title="Analytics",
        rows=rows,
        accounts=accounts,
        log_rows=LOG_ROWS,
        total=_stats(list(seen.values())),
        more=max(len(agents) - MAX_LISTINGS, 0),
        charts=[
            {
                "title": RUNS,
                "svg": bar_chart(RUNS, runs, _count),
                "summary": summary(RUNS, runs, _count),
                "rows": [(day, _count(v)) for day, v in runs],
                "unit": "Runs",
            },
            {
                "title": REVENUE,
                "svg": line_chart(REVENUE, revenue, _sol),
                "summary": summary(REVENUE, revenue, _sol),
                "rows": [(day, _sol(v)) for day, v in revenue],
                "unit": "Revenue",
            },
        ],
    )


PAGES = (("/analytics", analytics, ["GET"]),)
