"""Wallet: the balance, royalties held for creators, the payment channels with
their lockups, the licences and subscriptions this node bought and what its
creators sold of them, and what this node earned (per listing, per day, and
settled on the ledger). Closing, refunding and airdropping are POST forms (CSRF-checked)
that come back here with a flash message; a refusal shows this page again with
the error, and nothing changed."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from mercato import MercatoError

from ._app import _status_of, redirect
from ._charts import bar_chart, daily, summary
from ._format import LAMPORTS_PER_SOL, sol

if TYPE_CHECKING:
    from starlette.datastructures import FormData
    from starlette.requests import Request
    from starlette.responses import Response

    from ._app import Web

FLASH = {
    "closed": "Channel closed: what it owed is paid out on the ledger.",
    "refunded": "Channel refunded: what it still held is back in this wallet.",
    "airdropped": "Airdrop received: the balance above includes it.",
}
FAUCET_LEDGERS = ("embedded", "localnet")  # not a real cluster: its money is for testing
EARNINGS_ROWS = 5_000  # the newest provider tasks counted: the facade builds each on the loop
MAX_LISTINGS = 100
BPS = 10_000
MAX_AIRDROP_LAMPORTS = 1_000 * LAMPORTS_PER_SOL  # the facade refuses more
STAKE = re.compile(r"[1-9A-HJ-NP-Za-km-z]{32,44}")
CHART = "Earnings per day"


def _sol(value: float) -> str:
    return sol(int(value))


async def wallet(web: Web, request: Request) -> Response:
    return await _page(web, request, flash=FLASH.get(request.query_params.get("done", "")))


async def _page(
    web: Web,
    request: Request,
    code: int = 200,
    flash: str | None = None,
    error: str | None = None,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    money = web.api.money
    ledger_error = None
    info: dict[str, Any] | None = None
    try:
        info = (await money.wallet()).model_dump()
    except MercatoError as exc:  # an RPC ledger that is down: the channels are still known
        ledger_error = str(exc)
    now = info["now"] if info else int(time.time())
    channels = [c.model_dump() for c in money.channels().channels]
    for c in channels:
        c["time_left"] = c["expires"] - now
    earnings = await _earnings(web, channels, info["address"] if info else "")
    licences = await _licences(web)
    return web.render(
        request,
        "wallet.html",
        code=code,
        title="Wallet",
        wallet=info,
        ledger_error=ledger_error,
        faucet=bool(info and info["ledger"] in FAUCET_LEDGERS),
        channels=channels,
        flash=flash,
        error=error,
        errors=errors or {},
        values=values or {"lamports": "1000000000"},
        max_airdrop=MAX_AIRDROP_LAMPORTS,
        **earnings,
        **licences,
    )


async def _licences(web: Web) -> dict[str, Any]:
    """The licences this node bought, and what its creators sold per plan."""
    commerce = web.api.commerce
    try:
        held = [x.model_dump() for x in (await commerce.licences()).licences]
        totals = [t.model_dump() for t in (await commerce.sales()).totals]
    except MercatoError:  # a node without a wallet (a relay) buys and sells nothing
        held, totals = [], []
    return {"licences": held, "sale_totals": totals}


async def _earnings(web: Web, channels: list[dict[str, Any]], address: str) -> dict[str, Any]:
    """Income as a provider per listing with the creators' royalty share in it,
    earnings per day, and what closed channels settled per recipient."""
    log = await web.api.tasks.recent(EARNINGS_ROWS, "provider")
    per: dict[str, dict[str, Any]] = {}
    points: list[tuple[float, float]] = []
    for side in log.tasks:
        t = side.model_dump()
        if t["status"] != "ok":
            continue
        row = per.setdefault(t["agent"], {"agent": t["agent"], "tasks": 0, "income": 0})
        row["tasks"] += 1
        row["income"] += t["price"]
        row.setdefault("prices", []).append(t["price"])
        points.append((t["created"], float(t["price"])))
    rows = sorted(per.values(), key=lambda r: (-r["income"], r["agent"]))[:MAX_LISTINGS]
    for row in rows:
        bps = await _royalty_bps(web, row["agent"])
        row["royalty_bps"] = bps
        # Per task, rounded down as the channel splits it (settlement.split).
        royalty = sum(p * bps // BPS for p in row.pop("prices")) if bps is not None else None
        row["royalty"] = royalty
        row["share"] = row["income"] - royalty if royalty is not None else None
    settled: dict[str, dict[str, Any]] = {}
    for c in channels:
        if c["role"] != "payee" or c["status"] != "closed":
            continue
        for recipient, amount in c["settled"].items():
            entry = settled.setdefault(
                recipient, {"recipient": recipient, "amount": 0, "channels": 0, "mine": False}
            )
            entry["amount"] += amount
            entry["channels"] += 1
            entry["mine"] = recipient == address
    series = daily(points)
    return {
        "earnings": rows,
        "earned_total": sum(r["income"] for r in per.values()),
        "earned_tasks": sum(r["tasks"] for r in per.values()),
        "earnings_rows": EARNINGS_ROWS,
        "settled": sorted(settled.values(), key=lambda e: (-e["amount"], e["recipient"])),
        "chart": bar_chart(CHART, series, _sol),
        "chart_summary": summary(CHART, series, _sol),
        "chart_title": CHART,
        "series": series,
    }


async def _royalty_bps(web: Web, agent: str) -> int | None:
    """The listing's royalty now; None if it is gone from this node's registry."""
    publisher, _, name = agent.partition("/")
    try:
        listing = (await web.api.registry.show(publisher, name)).model_dump()
    except MercatoError:
        return None
    bps = listing.get("royalty_bps", 0)
    return min(max(bps, 0), BPS) if isinstance(bps, int) else None


def _field(form: FormData, name: str, limit: int) -> str:
    value = form.get(name, "")
    return value.strip()[:limit] if isinstance(value, str) else ""


async def _refused(web: Web, request: Request, what: str, exc: MercatoError) -> Response:
    from ..control import ERRORS

    return await _page(
        web, request, code=_status_of(exc, ERRORS), error=f"{what}: {exc}. Nothing was changed."
    )


async def _on_channel(
    web: Web, request: Request, act: Callable[[str], Awaitable[Any]], what: str, done: str
) -> Response:
    """Close or refund the channel the form names; back to the wallet either way."""
    stake = _field(await web.form(request), "stake", 64)
    if not STAKE.fullmatch(stake):
        return await _page(web, request, code=400, error="That is not a channel's address.")
    try:
        await act(stake)
    except MercatoError as exc:
        return await _refused(web, request, f"The channel could not be {what}", exc)
    return redirect(f"/wallet?done={done}")


async def close(web: Web, request: Request) -> Response:
    return await _on_channel(web, request, web.api.money.close, "closed", "closed")


async def refund(web: Web, request: Request) -> Response:
    return await _on_channel(web, request, web.api.money.refund, "refunded", "refunded")


async def airdrop(web: Web, request: Request) -> Response:
    text = _field(await web.form(request), "lamports", 32)
    lamports = int(text) if text.isdigit() and len(text) <= 16 else 0
    if not 1 <= lamports <= MAX_AIRDROP_LAMPORTS:
        return await _page(
            web,
            request,
            code=400,
            errors={"lamports": f"a whole number of lamports from 1 to {MAX_AIRDROP_LAMPORTS}"},
            values={"lamports": text},
        )
    try:
        await web.api.money.airdrop(lamports)
    except MercatoError as exc:
        return await _refused(web, request, "The airdrop failed", exc)
    return redirect("/wallet?done=airdropped")


PAGES = (
    ("/wallet", wallet, ["GET"]),
    ("/wallet/close", close, ["POST"]),
    ("/wallet/refund", refund, ["POST"]),
    ("/wallet/airdrop", airdrop, ["POST"]),
)
