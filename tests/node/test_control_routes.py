"""Every control API route, driven over HTTP in one scenario on two real nodes.

Two checks come out of it: each route answers success with the status its
OpenAPI document names (read back from the node's own request metrics), and
what `ControlClient` gets over HTTP is what the `NodeAPI` facade returns in
process.
"""

import base64
import http.client
import json
import re
from pathlib import Path

import pytest
import trio
from solders.pubkey import Pubkey

from mercato.node import ControlClient, ControlError, Node
from mercato.settlement import open_embedded_ledger

from ..conftest import budget
from .test_registry_network import running_nodes
from .test_tasks import EXAMPLES, LISTING, until

PRICE = 10_000_000
LICENCE_PLAN = {"kind": "licence", "price": 20_000_000, "refund_days": 1}
NOT_EXERCISED = {
    ("POST", "/v1/channels/{stake}/refund"): "succeeds only after the lockup, a day away",
    ("POST", "/v1/shutdown"): "checked on its own at the end: it stops the node",
    ("GET", "/v1/tasks/{task_id}/proof"): "needs a ledger with history: test_receipt_proofs.py",
    ("POST", "/v1/chat/completions"): "needs an inference engine: tests/models",
}
METRIC = re.compile(r'^mercato_api_requests_total\{route="([^"]+)",status="(\d+)"\} (\S+)$', re.M)


def documented(client: ControlClient) -> dict[tuple[str, str], int]:
    """(METHOD, path) -> the one success status the OpenAPI document names."""
    doc = client.request("GET", "/openapi.json", auth=False)
    out = {}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            (ok,) = [int(code) for code in op["responses"] if code.startswith("2")]
            out[(method.upper(), path)] = ok
    return out


def observed(client: ControlClient) -> dict[str, set[int]]:
    """Route path -> the success statuses the node answered with."""
    seen: dict[str, set[int]] = {}
    for route, status, count in METRIC.findall(client.metrics()):
        if status.startswith("2") and float(count) > 0:
            seen.setdefault(route.replace(":path}", "}"), set()).add(int(status))
    return seen


def drive(creator: ControlClient, user: ControlClient, there: str, wasm: Path) -> str:
    """The scenario, blocking, over HTTP. Returns the user's channel."""
    for client in (creator, user):
        client.health()
        client.node()
        client.status()
        client.events_verify()
        client.metrics()
        client.ui_login()
    assert user.request("GET", "/v1/models") == {"object": "list", "data": []}
    assert creator.request("GET", "/v1/models/served") == []  # no [models] engine here
    user.keys_new("alice")
    user.keys_show("alice")
    user.keys_list()
    user.events(0, 10)
    user.connect(there)
    user.peers()
    user.ping(creator.status()["peer_id"])
    listing = {**LISTING, "name": "wc", "price": PRICE, "royalty_bps": 1000}
    publisher = creator.publish(listing)["publisher"]
    creator.release({"name": "wc", "version": "1.0.0"}, build=str(wasm))
    assert creator.releasing("wc", "1.0.0")["stage"] == "none"  # bound: none under way
    creator.publish({**LISTING, "name": "old"})
    creator.deprecate("old")
    creator.publish({**LISTING, "name": "lic", "plans": {"pro": LICENCE_PLAN}})
    assert creator.request("GET", "/v1/registry/digest")["feeds"] == 1
    return publisher


@pytest.mark.slow
async def test_every_route_answers_as_documented_and_http_matches_the_facade(
    tmp_path: Path,
) -> None:
    fast = {"heartbeat_s": 0.5, "card_ttl_s": 5.0}
    async with (
        open_embedded_ledger(tmp_path / "ledger.db") as ledger,
        running_nodes(tmp_path, 2, serve=fast, ledger=ledger) as (creator, user),
    ):
        a, b = ControlClient(creator.datadir, timeout=60), ControlClient(user.datadir, timeout=60)
        there = creator.overlay.host.listen_addrs()[0]
        wasm = EXAMPLES / "wordcount" / "wordcount.wasm"
        publisher = await trio.to_thread.run_sync(drive, a, b, there, wasm)
        agent = f"{publisher}/wc"
        creator.tasks.serve_agents((agent,))
        await until(lambda: _ready(user, agent), budget(30), "the release and the card")
        await trio.to_thread.run_sync(_use, b, agent, publisher, wasm, creator)
        await _close_on_the_payee(a, b)
        await until(lambda: _seller_known(user, publisher), budget(30), "the seller record")
        await trio.to_thread.run_sync(_buy_and_refund, a, b, publisher)

        # The facade in process and the client over HTTP give the same answers.
        same = [
            (user.api.node.keys_list(), b.keys_list, "keys"),  # the client gives the list
            (user.api.registry.show(publisher, "wc"), lambda: b.show(publisher, "wc"), None),
            (user.api.builds.stored(), b.builds, None),
            (user.api.tasks.recent(), b.tasks, None),
            (user.api.money.wallet(), b.wallet, None),
            (user.api.commerce.licences(), b.licences, None),
            (creator.api.commerce.sales(), a.sales, None),
            (user.api.node.events(0, 1000), lambda: b.events(0, 1000), None),
        ]
        for in_process, over_http, field in same:
            local = (await in_process).model_dump(mode="json")
            remote = await trio.to_thread.run_sync(over_http)
            if isinstance(remote, dict) and "now" in remote:  # the ledger's clock moves on
                assert abs(local.pop("now") - remote.pop("now")) <= budget(5)
            assert (local[field] if field else local) == remote
        assert user.api.money.channels().model_dump(mode="json") == await trio.to_thread.run_sync(
            b.channels
        )
        # The creator served its own listing once, and closed the channel: all is its own.
        earned = (await creator.api.earnings.earnings(since=0.0)).model_dump(mode="json")
        over_http = await trio.to_thread.run_sync(lambda: a.earnings(since=0.0))
        assert {**earned, "days": 0} == {**over_http, "days": 0}
        assert (earned["totals"]["revenue"], earned["totals"]["closed_earned"]) == (PRICE, PRICE)
        by_provider = await trio.to_thread.run_sync(lambda: b.usage(30, "provider"))
        assert [(r["provider"], r["lamports"]) for r in by_provider["usage"]] == [
            (creator.overlay.peer_id, PRICE)
        ]

        docs = await trio.to_thread.run_sync(documented, b)
        seen: dict[str, set[int]] = {}
        for client in (a, b):
            for route, statuses in (await trio.to_thread.run_sync(observed, client)).items():
                seen.setdefault(route, set()).update(statuses)
        for (method, path), ok in docs.items():
            if (method, path) in NOT_EXERCISED:
                continue
            assert ok in seen.get(path, set()), f"{method} {path}: never answered {ok}"
        assert "unmatched" not in seen  # every success came from a route
        for path, statuses in seen.items():
            if path in ("/openapi.json", "/docs"):  # the document itself, and Swagger UI
                continue
            promised = {ok for (_, p), ok in docs.items() if p == path}
            assert statuses <= promised, f"{path} answered {statuses}, documents {promised}"

        # Shutdown answers 202, as documented, then the node stops.
        assert docs[("POST", "/v1/shutdown")] == 202
        assert await trio.to_thread.run_sync(_raw_status, b, "POST", "/v1/shutdown") == 202


async def _ready(user: Node, agent: str) -> bool:
    publisher, name = agent.split("/")
    shown = await user.registry.show(publisher, name)
    return bool(shown and shown["releases"] and user.tasks.providers(agent))


def _use(b: ControlClient, agent: str, publisher: str, wasm: Path, creator: Node) -> None:
    b.search(text="agent")
    b.show(publisher, "wc")
    b.resolve(agent, "^1")
    b.providers(agent)
    quote = b.quote(agent, "^1", 13)
    assert quote["price"] == PRICE and not quote["needs_approval"]
    done = b.run_task(agent, "*", b"one two three", idempotency_key="route-test")
    assert b.run_task(agent, "*", b"one two three", idempotency_key="route-test") == done
    assert b.spending()["spent_today"] == PRICE
    body = {"agent": agent, "input": base64.b64encode(b"one two three").decode()}
    again = _post_with_key(b, "/v1/tasks/run", body, "route-test")
    assert again["task"] == done["task"]  # the key in the header is the same key
    assert json.loads(base64.b64decode(done["output"]))["words"] == 3
    b.task(done["task"])
    b.tasks()
    assert b.usage()["totals"]["user"] == {
        "calls": 1, "calls_ok": 1, "input_tokens": 0, "output_tokens": 0, "lamports": PRICE
    }  # fmt: skip
    b.wallet()
    b.airdrop(10**9)
    b.channels()
    cid = b.build_add(str(wasm))["cid"]
    for action in ("unpin", "pin", "verify"):
        b.build_action(cid, action)
    b.build(cid)
    b.builds()
    b.builds_gc()
    other = "bld-" + "0" * 64
    b.build_fetch(other)
    answer = b.request(
        "POST",
        "/v1/runtime/run",
        {"wasm": base64.b64encode(wasm.read_bytes()).decode(), "input": "YSBi"},
    )
    assert answer["outcome"] == "ok"
    payee = creator.settlement.address
    b.channel_open(creator.overlay.peer_id, 10**8, 86_400, payee)


async def _seller_known(user: Node, publisher: str) -> bool:
    return bool(await user.overlay.dht.find_providers(f"seller:{publisher}"))


def _buy_and_refund(a: ControlClient, b: ControlClient, publisher: str) -> None:
    bought = b.buy(f"{publisher}/lic", "pro")
    assert (bought["plan"], bought["party"], bought["state"]) == ("pro", publisher, "active")
    assert b.licences()["licences"] == [bought]
    refunded = b.refund(bought["mint"])
    assert refunded["state"] == "refunded" and refunded["mint"] == bought["mint"]
    sales = a.sales()
    assert [s["mint"] for s in sales["sales"]] == [bought["mint"]]
    assert sales["totals"][0]["refunds"] == 1


async def _close_on_the_payee(a: ControlClient, b: ControlClient) -> None:
    channels = (await trio.to_thread.run_sync(b.channels))["channels"]
    mine = {c["stake"] for c in channels}
    await trio.to_thread.run_sync(b.channel, next(iter(mine)))
    paid = next(c for c in channels if c["paid"] > 0)
    closed = await trio.to_thread.run_sync(a.channel_close, paid["stake"])
    assert closed["signature"] and Pubkey.from_string(closed["payee"])
    with pytest.raises(ControlError) as early:  # the payer cannot refund before T
        await trio.to_thread.run_sync(b.channel_refund, paid["stake"])
    assert early.value.status in (409, 502)


def _post_with_key(client: ControlClient, path: str, body: dict, key: str) -> dict:
    info = json.loads(client.datadir.api_file.read_text())
    token = client.datadir.token_file.read_text().strip()
    conn = http.client.HTTPConnection(info["host"], info["port"], timeout=60)
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Idempotency-Key": key,
    }
    try:
        conn.request("POST", path, body=json.dumps(body), headers=headers)
        response = conn.getresponse()
        assert response.status == 200, response.read()
        return json.loads(response.read())
    finally:
        conn.close()


def _raw_status(client: ControlClient, method: str, path: str) -> int:
    info = json.loads(client.datadir.api_file.read_text())
    token = client.datadir.token_file.read_text().strip()
    conn = http.client.HTTPConnection(info["host"], info["port"], timeout=10)
    try:
        conn.request(method, path, headers={"Authorization": f"Bearer {token}"})
        return conn.getresponse().status
    finally:
        conn.close()
