"""The licence routes of the control API on one real node: their refusals of bad
input, their answers as the facade gives them, and the errors' table rows. (A
purchase and a refund between nodes are in test_commerce.py and, over HTTP, in
test_control_routes.py.)"""

import time

import pytest

from mercato.node import ControlClient, ControlError, Node
from mercato.node.commerce import (
    BadSignedObject,
    CommerceError,
    LicenceRefused,
    LicenceRequired,
    LicenceRow,
    NoSeller,
    SaleRefused,
    UnknownLicence,
)
from mercato.node.control import ERRORS
from mercato.node.control._errors import answer_for

from .test_control_api import call

PUBLISHER = "8Co4tt4sbELaV8uRcbz31ojp8QdazK5MxczX8j1d5EoB"
MINT = "7fJrupaZXvcxYiSzuvc78YUKwk9Vhq6qxMS4JskYED39"
BUYER = "11111111111111111111111111111111"


def a_row(mint: str, party: str, **changes) -> LicenceRow:
    fields = {
        "mint": mint, "agent": f"{PUBLISHER}/wc", "plan": "pro", "kind": "licence",
        "versions": "^1", "expires": 0, "refund_until": 0, "price": 50_000_000,
        "party": party, "signature": "5" * 88, "time": time.time(),
    } | changes  # fmt: skip
    return LicenceRow(**fields)


async def test_licence_routes_refuse_bad_input_with_clear_errors(node: Node) -> None:
    client = ControlClient(node.datadir)
    listing = {"name": "free", "kind": "agent", "title": "Free", "summary": "No plans.",
               "price": 0, "royalty_bps": 0}  # fmt: skip
    mine = (await call(client.publish, listing))["publisher"]
    refusals = [
        (client.buy, ("no-slash", "pro"), "bad_agent", 400, "PUBLISHER/NAME"),
        (client.buy, ("a/b", "pro"), "bad_agent", 400, "PUBLISHER/NAME"),
        (client.buy, (f"{PUBLISHER}/Wc", "pro"), "bad_agent", 400, "PUBLISHER/NAME"),
        (client.buy, (f"{PUBLISHER}/wc", "Pro!"), "bad_plan", 400, "plan"),
        (client.buy, (f"{PUBLISHER}/wc", "p" * 33), "bad_body", 400, "plan"),
        (client.buy, (f"{PUBLISHER}/wc", "pro"), "commerce", 400, "no listing"),
        (client.buy, (f"{mine}/free", "pro"), "commerce", 400, "no plan 'pro'"),
        (client.refund, ("not-a-mint",), "bad_mint", 400, "mint"),
        (client.refund, ("0" * 44,), "bad_mint", 400, "mint"),  # 0 is not base58
        (client.refund, (MINT,), "no_such_licence", 404, "mercato licences"),
    ]
    for fn, args, code, status, says in refusals:
        with pytest.raises(ControlError, match=says) as refused:
            await call(fn, *args)
        assert (refused.value.status, refused.value.code) == (status, code), args
    with pytest.raises(ControlError) as unknown:
        await call(client.request, "POST", "/v1/licences", {"agent": "a/b", "plan": "p", "x": 1})
    assert unknown.value.status == 400
    assert await call(client.licences) == {"licences": []}
    assert await call(client.sales) == {"sales": [], "totals": []}


async def test_licences_and_sales_answer_as_the_facade_gives_them(node: Node) -> None:
    client = ControlClient(node.datadir)
    now = time.time()
    held = [
        a_row(MINT, PUBLISHER, time=now - 10),
        a_row(BUYER, PUBLISHER, plan="monthly", kind="subscription", expires=int(now) - 1),
        a_row(PUBLISHER, PUBLISHER, plan="team", refunded="3" * 88),
    ]
    for row in held:
        await node.commerce.held.add(row)
    sold = [
        a_row(MINT, BUYER, time=now - 20),
        a_row(PUBLISHER, BUYER, time=now - 10, refund_until=int(now) + 86_400),
        a_row(BUYER, MINT, refunded="4" * 88),
    ]
    for row in sold:
        await node.commerce.sold.add(row)

    licences = await call(client.licences)
    assert licences == (await node.api.commerce.licences()).model_dump(mode="json")
    states = {x["plan"]: x["state"] for x in licences["licences"]}
    assert states == {"pro": "active", "monthly": "expired", "team": "refunded"}
    assert licences["licences"][0]["party"] == PUBLISHER  # held: the creator

    sales = await call(client.sales)
    assert sales == (await node.api.commerce.sales()).model_dump(mode="json")
    assert [s["mint"] for s in sales["sales"]] == [BUYER, PUBLISHER, MINT]  # newest first
    assert sales["sales"][0]["state"] == "refunded"
    agent = f"{PUBLISHER}/wc"
    assert sales["totals"] == [
        {"agent": agent, "plan": "pro", "sales": 3, "lamports": 100_000_000, "refunds": 1}
    ]
    with pytest.raises(ControlError) as again:  # refunded already: said so, nothing sent
        await call(client.refund, PUBLISHER)
    assert again.value.status == 400 and "refunded already" in str(again.value)


def test_commerce_errors_have_their_rows_in_the_table() -> None:
    assert {
        cls: answer_for(cls("why"))
        for cls in (LicenceRequired, LicenceRefused, UnknownLicence, NoSeller,
                    BadSignedObject, CommerceError)
    } == {
        LicenceRequired: (403, "licence_required"),
        LicenceRefused: (403, "licence_refused"),
        UnknownLicence: (404, "no_such_licence"),
        NoSeller: (503, "seller_offline"),
        BadSignedObject: (400, "bad_request"),
        CommerceError: (400, "commerce"),
    }  # fmt: skip
    assert answer_for(SaleRefused("refund_window_over", "too late")) == (409, "sale_refused")
    assert all(cls in ERRORS for cls in (SaleRefused, NoSeller))


async def test_the_openapi_document_shows_licences_and_upgrades(node: Node) -> None:
    client = ControlClient(node.datadir)
    doc = await call(lambda: client.request("GET", "/openapi.json", auth=False))
    paths = doc["paths"]
    assert set(paths["/v1/licences"]) == {"get", "post"}
    assert "201" in paths["/v1/licences"]["post"]["responses"]
    assert "post" in paths["/v1/licences/{mint}/refund"] and "get" in paths["/v1/sales"]
    done = doc["components"]["schemas"]["TaskDone"]["properties"]
    assert {"licence", "upgrade"} <= set(done)


async def test_a_purchase_follows_the_spending_policy(node: Node) -> None:
    client = ControlClient(node.datadir)
    listing = {"name": "sold", "kind": "agent", "title": "Sold", "summary": "By plan.",
               "price": 0, "royalty_bps": 0,
               "plans": {"pro": {"kind": "licence", "price": 50_000_000}}}  # fmt: skip
    agent = f"{(await call(client.publish, listing))['publisher']}/sold"
    base = node.config
    node.config = base.replace("spending", approve_above=1_000_000, max_per_day=None)
    with pytest.raises(ControlError, match="approve_above") as unconfirmed:
        await call(client.buy, agent, "pro")
    assert (unconfirmed.value.status, unconfirmed.value.code) == (403, "approval_needed")
    node.config = base.replace("spending", approve_above=None, max_per_day=10_000_000)
    with pytest.raises(ControlError, match="left today") as over:
        await call(client.buy, agent, "pro", True)
    assert (over.value.status, over.value.code) == (403, "daily_limit")
    # Within the policy, the purchase goes on (and this node cannot buy its own).
    node.config = base.replace("spending", approve_above=1_000_000, max_per_day=None)
    with pytest.raises(ControlError, match="cannot buy from itself"):
        await call(client.buy, agent, "pro", True)
    assert node.tasks.spending.reserved == 0
