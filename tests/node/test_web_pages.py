"""The web app's tasks, wallet, analytics and node pages over real HTTP on a real
node: what they show, bad filters, the wallet's forms and their CSRF check, and
the live log; the SVG charts escape what they draw."""

from __future__ import annotations

import datetime
import json
import logging
import re
import secrets
import threading
import time
from contextlib import closing

import httpx
import trio
from solders.hash import Hash
from solders.pubkey import Pubkey

from mercato.node import Node
from mercato.node.tasks import TaskRecord
from mercato.node.tasks._messages import Receipt, digest
from mercato.node.web._charts import bar_chart, daily, line_chart
from mercato.node.web._format import sol
from mercato.p2p import Keypair
from mercato.settlement import ChannelTerms

from .test_control_api import call
from .test_web import csrf_of, signed_in

LISTING = {"kind": "agent", "title": "Counter", "summary": "Counts.", "price": 5000}


def balance_of(html: str) -> str:
    found = re.search(r'<span class="big" id="balance">([^<]+)</span>', html)
    assert found, "the wallet page shows no balance"
    return found.group(1)


async def a_task(
    node: Node,
    agent: str,
    role: str = "provider",
    status: str = "ok",
    price: int = 5000,
    wall_ms: int = 40,
    receipt: bool = False,
) -> str:
    """A task written to the node's task log as a run would; returns its id."""
    task = secrets.token_bytes(16)
    signed = None
    if receipt:
        provider = Keypair.generate()
        signed = Receipt(
            task=task, agent=agent, version="1.0.0", cid="bld-" + "0" * 64,
            input_hash=digest(b"in"), output_hash=digest(b"out"), outcome=status, fuel=1,
            wall_ms=wall_ms, price=price, provider=provider.peer_id, user="someone",
            time=int(time.time()), quote=b"q" * 16,
        ).sign(provider)  # fmt: skip
    record = TaskRecord(
        task.hex(), role, agent, "1.0.0", "provider-peer", "user-peer", status, price,
        time.time(), wall_ms, "receipt" if receipt else "", "",
        [{"provider": "an-earlier-peer", "error": "it timed out"}], signed,
    )  # fmt: skip
    await node.tasks.tasklog.write(record)
    return task.hex()


async def test_the_pages_render_with_their_headings(node: Node) -> None:
    with closing(await call(signed_in, node)) as client:
        base = node.api_url
        expected = {
            "/tasks": ["<h1>Tasks</h1>", 'for="f-role"', 'for="f-from"', "Filter</button>"],
            "/wallet": [
                "<h1>Wallet</h1>",
                "<h2>Balance</h2>",
                "<h2>Channels</h2>",
                "<h2>Test money</h2>",  # the embedded ledger has a faucet
                "<h2>Earnings</h2>",
                'class="chart"',
            ],
            "/analytics": ["<h1>Analytics</h1>", "<h2>Per listing</h2>", "what this node saw"],
            "/node": [
                "<h1>Node</h1>",
                "<h2>Storage</h2>",
                "<h2>Builds stored</h2>",
                "<h2>Builds kept for the network</h2>",
                "<h2>Relay reservations</h2>",
                "<h2>Configuration</h2>",
                "[settlement]",
                'data-stream="/stream/log?after=',
            ],
        }
        for path, parts in expected.items():
            answer = await call(client.get, base + path)
            assert answer.status_code == 200, (path, answer.text[:500])
            for part in parts:
                assert part in answer.text, (path, part)


async def test_a_task_shows_each_side_and_its_receipt(node: Node) -> None:
    task = await a_task(node, "pub/agent", receipt=True)
    with closing(await call(signed_in, node)) as client:
        listed = await call(client.get, node.api_url + "/tasks?role=provider&agent=agent")
        assert listed.status_code == 200
        assert f'href="/tasks/{task}"' in listed.text
        answer = await call(client.get, node.api_url + f"/tasks/{task}")
        assert answer.status_code == 200, answer.text[:500]
        assert '<h2 id="side-1">Provider side</h2>' in answer.text
        assert "&#34;outcome&#34;: &#34;ok&#34;" in answer.text  # the receipt, indented JSON
        assert "it timed out" in answer.text  # the attempt before it
        assert "0.000005 SOL (5000 lamports)" in answer.text
        unknown = await call(client.get, node.api_url + "/tasks/" + "ab" * 16)
        assert unknown.status_code == 404
        assert "this node has no task" in unknown.text
        bad = await call(client.get, node.api_url + "/tasks/not-a-task")
        assert bad.status_code == 400


async def test_a_model_call_shows_its_tokens_in_the_list_and_on_its_page(node: Node) -> None:
    call_id = secrets.token_hex(16)
    record = TaskRecord(
        call_id, "user", "pub/llama", "1.0.0", "provider-peer", "user-peer", "ok", 300,
        time.time(), 120, "", "", [], None, 12, 34,
    )  # fmt: skip
    await node.tasks.tasklog.write(record)
    agent_task = await a_task(node, "pub/agent", role="user")
    with closing(await call(signed_in, node)) as client:
        listed = await call(client.get, node.api_url + "/tasks")
        assert listed.status_code == 200
        rows = {
            task_id: row
            for row in re.findall(r"<tr>.*?</tr>", listed.text, re.S)
            for task_id in (call_id, agent_task)
            if f'href="/tasks/{task_id}"' in row
        }
        assert 'data-label="Tokens in/out" class="num">12/34<' in rows[call_id]
        assert 'data-label="Tokens in/out" class="num">-<' in rows[agent_task]
        page = await call(client.get, node.api_url + f"/tasks/{call_id}")
        assert "<dt>Tokens</dt><dd>12 in, 34 out</dd>" in page.text


async def test_bad_filters_are_refused_next_to_their_field(node: Node) -> None:
    with closing(await call(signed_in, node)) as client:
        url = node.api_url + "/tasks?role=admin&from=yesterday&to=2026-01-01&status=%3Cb%3E"
        answer = await call(client.get, url)
        assert answer.status_code == 400
        for name in ("role", "from", "status"):
            field = re.search(rf'id="f-{name}"[^>]*>.*?</(?:select|div)>', answer.text, re.S)
            assert field and 'aria-invalid="true"' in field.group(0), name
            assert f'<span class="field-error" id="e-{name}">' in answer.text
        assert "<b>" not in answer.text
        reversed_dates = await call(
            client.get, node.api_url + "/tasks?from=2026-02-01&to=2026-01-01"
        )
        assert reversed_dates.status_code == 400
        assert 'id="e-to"' in reversed_dates.text
        too_long = await call(client.get, node.api_url + "/tasks?agent=" + "a" * 5000)
        assert too_long.status_code == 400 and 'id="e-agent"' in too_long.text


async def test_an_airdrop_raises_the_balance_shown(node: Node) -> None:
    with closing(await call(signed_in, node)) as client:
        page = await call(client.get, node.api_url + "/wallet")
        before = balance_of(page.text)
        form = {"_csrf": csrf_of(page.text), "lamports": "1500000000"}
        answer = await call(lambda: client.post(node.api_url + "/wallet/airdrop", data=form))
        assert answer.status_code == 303
        assert answer.headers["location"] == "/wallet?done=airdropped"
        after = await call(client.get, node.api_url + answer.headers["location"])
        assert '<p class="ok" role="status">Airdrop received' in after.text
        whole = (await node.api.money.wallet()).balance
        assert balance_of(after.text) != before
        assert balance_of(after.text) == sol(whole)
        bad = {"_csrf": form["_csrf"], "lamports": "lots"}
        refused = await call(lambda: client.post(node.api_url + "/wallet/airdrop", data=bad))
        assert refused.status_code == 400
        assert '<span class="field-error" id="e-lamports">' in refused.text
        assert (await node.api.money.wallet()).balance == whole


async def test_a_form_without_its_csrf_token_changes_nothing(node: Node) -> None:
    before = (await node.api.money.wallet()).balance
    with closing(await call(signed_in, node)) as client:
        form = {"lamports": "1000000000"}
        answer = await call(lambda: client.post(node.api_url + "/wallet/airdrop", data=form))
        assert answer.status_code == 403
        stale = {**form, "_csrf": "not-the-token"}
        answer = await call(lambda: client.post(node.api_url + "/wallet/airdrop", data=stale))
        assert answer.status_code == 403
    assert (await node.api.money.wallet()).balance == before


async def test_closing_an_unknown_channel_shows_the_wallet_with_the_error(node: Node) -> None:
    with closing(await call(signed_in, node)) as client:
        page = await call(client.get, node.api_url + "/wallet")
        form = {"_csrf": csrf_of(page.text), "stake": "1" * 44}
        answer = await call(lambda: client.post(node.api_url + "/wallet/close", data=form))
        assert answer.status_code == 404
        assert "<h1>Wallet</h1>" in answer.text
        assert '<p class="error" role="alert">The channel could not be closed' in answer.text
        assert balance_of(answer.text) == balance_of(page.text)


async def test_earnings_and_analytics_count_the_task_log(node: Node) -> None:
    address = (await node.api.node.keys_show("default")).address
    await node.api.registry.publish("default", {**LISTING, "name": "counter", "royalty_bps": 1000})
    mine = f"{address}/counter"
    await a_task(node, mine, wall_ms=10)
    await a_task(node, mine, wall_ms=30)
    await a_task(node, mine, status="trap", price=0)
    await a_task(node, "gone/listing", price=7000)
    with closing(await call(signed_in, node)) as client:
        wallet = await call(client.get, node.api_url + "/wallet")
        rows = {
            cells[0]: cells[1:]
            for cells in (
                re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
                for row in re.findall(r"<tr>(.*?)</tr>", wallet.text, re.S)
            )
            if cells
        }
        assert rows[mine] == ["2", "0.00001 SOL", "10%", "0.000001 SOL", "0.000009 SOL"]
        assert rows["gone/listing"][:3] == ["1", "0.000007 SOL", "listing gone"]
        assert '<span id="earned-total">0.000017 SOL</span>' in wallet.text
        analytics = await call(client.get, node.api_url + "/analytics")
        assert analytics.status_code == 200
        first = analytics.text.index(mine)
        assert first < analytics.text.index("gone/listing")  # this node's listings first
        assert '<span class="badge">yours</span>' in analytics.text
        assert "67%" in analytics.text  # 2 of 3 runs succeeded


def test_charts_escape_their_labels_and_sum_up_the_data() -> None:
    series = [("<script>alert(1)</script>", 3.0), ("b&c", 5.0)]
    for chart in (bar_chart("Runs <per> day", series), line_chart("Runs <per> day", series)):
        assert "<script>" not in chart and "<per>" not in chart
        assert "&lt;script&gt;" in chart
        assert chart.startswith('<svg class="chart" viewBox="0 0 640 240" role="img"')
        assert "<title>Runs &lt;per&gt; day</title>" in chart
        assert "highest 5 at b&amp;c; total 8." in chart
    assert "No data yet" in bar_chart("Empty", [])
    day = 86_400
    two_days = daily([(0, 1.0), (2 * day + 5, 2.0)], today=datetime.date(1970, 1, 3))
    assert two_days == [("1970-01-01", 1.0), ("1970-01-02", 0.0), ("1970-01-03", 2.0)]
    assert len(daily([(0, 1.0)], today=datetime.date(1970, 6, 1))) == 60  # the last 60 days


async def test_the_log_stream_sends_a_line_logged_after_it_started(node: Node) -> None:
    marker = f"web-log-test-{secrets.token_hex(4)}"
    started = threading.Event()

    def read(client: httpx.Client) -> str:
        timeout = httpx.Timeout(10.0)
        with client.stream("GET", node.api_url + "/stream/log", timeout=timeout) as answer:
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/event-stream")
            started.set()
            for line in answer.iter_lines():
                if line.startswith("data: ") and marker in line:
                    return str(json.loads(line.removeprefix("data: "))["text"])
        raise AssertionError("the stream ended without the line")

    with closing(await call(signed_in, node)) as client:
        got: list[str] = []
        async with trio.open_nursery() as nursery:

            async def reader() -> None:
                got.append(await call(read, client))

            nursery.start_soon(reader)
            assert await trio.to_thread.run_sync(started.wait, 10.0)
            logging.getLogger("mercato.test").warning(marker)
        assert marker in got[0] and "WARNING" in got[0]


async def test_a_channel_shows_its_lockup_and_a_close_button_naming_it(node: Node) -> None:
    wallet = node.settlement.wallet.pubkey()
    stake = Pubkey.new_unique()
    terms = ChannelTerms(
        Pubkey.new_unique(), wallet, stake, Pubkey.new_unique(), 1000, int(time.time()) + 7200
    )
    await node.settlement.book.add(terms, "payee", "12D3KooWpeer", Hash.default())
    with closing(await call(signed_in, node)) as client:
        page = await call(client.get, node.api_url + "/wallet")
        assert f'Close<span class="visually-hidden"> channel {stake}</span>' in page.text
        assert re.search(r"UTC<br>(1 h 59 min|2 h 0 min) left", page.text)
        form = {"_csrf": csrf_of(page.text), "stake": str(stake)}
        answer = await call(lambda: client.post(node.api_url + "/wallet/close", data=form))
        assert answer.status_code == 409, answer.text[:500]  # no payment: nothing to close with
        assert "The channel could not be closed" in answer.text
        assert balance_of(answer.text) == balance_of(page.text)
    assert node.api.money.channel(str(stake)).status == "open"


PLANS = {
    "pro": {"kind": "licence", "price": 50_000_000, "versions": "^1", "refund_days": 14},
    "monthly": {"kind": "subscription", "price": 10_000_000, "period_days": 30},
}


async def test_a_listing_sold_by_plan_shows_its_plans_and_a_buy_button_per_plan(
    node: Node,
) -> None:
    from .test_web import _job_when_done

    await node.api.node.keys_new("alice")  # another creator than this node's wallet
    shown = await node.api.registry.publish(
        "alice", {**LISTING, "name": "pro", "royalty_bps": 0, "plans": PLANS}
    )
    page_path = f"/market/{shown.model_dump()['publisher']}/pro"
    with closing(await call(signed_in, node)) as client:
        page = await call(client.get, node.api_url + page_path)
        assert page.status_code == 200, page.text[:500]
        plans = page.text.split('id="plans"')[1].split("</table>")[0]
        for words in ("0.05 SOL", "^1", "never expires", "within 14 days", "0.01 SOL per period",
                      "30 days", "subscription", "none"):  # fmt: skip
            assert words in plans, words
        for plan in ("pro", "monthly"):
            assert f'name="plan" value="{plan}"' in plans
        assert plans.count(f'action="{page_path}/buy"') == 2
        bad = {"_csrf": csrf_of(page.text), "plan": "Not A Plan"}
        refused = await call(lambda: client.post(node.api_url + page_path + "/buy", data=bad))
        assert refused.status_code == 400
        forged = await call(
            lambda: client.post(node.api_url + page_path + "/buy", data={"plan": "pro"})
        )
        assert forged.status_code == 403
        # The creator's node is not reachable (it is this one, which never sells to
        # itself over the network): the job fails and says so; nothing is bought.
        form = {"_csrf": csrf_of(page.text), "plan": "pro"}
        started = await call(lambda: client.post(node.api_url + page_path + "/buy", data=form))
        assert started.status_code == 303 and started.headers["location"].startswith("/jobs/")
        done = await call(_job_when_done, client, node.api_url + started.headers["location"], 60)
        assert '<p class="error" role="alert">' in done and "cannot be reached" in done
        assert f'href="{page_path}"' in done
    assert (await node.api.commerce.licences()).licences == []


async def test_the_own_listings_plans_show_without_a_buy_button(node: Node) -> None:
    shown = await node.api.registry.publish(
        "default", {**LISTING, "name": "mine", "royalty_bps": 0, "plans": PLANS}
    )
    with closing(await call(signed_in, node)) as client:
        page = await call(
            client.get, node.api_url + f"/market/{shown.model_dump()['publisher']}/mine"
        )
        assert page.status_code == 200 and 'id="plans"' in page.text
        assert "/buy" not in page.text


async def test_the_wallet_lists_licences_held_and_sales_totals(node: Node) -> None:
    from mercato.node.commerce import LicenceRow

    now = time.time()
    creator, buyer = str(Pubkey.new_unique()), str(Pubkey.new_unique())
    with closing(await call(signed_in, node)) as client:
        empty = await call(client.get, node.api_url + "/wallet")
        assert "<h2>Licences</h2>" in empty.text and "No licence yet" in empty.text
        assert 'id="sales"' not in empty.text
        held = LicenceRow(
            str(Pubkey.new_unique()), f"{creator}/wc", "monthly", "subscription", "*",
            int(now) + 30 * 86_400, 0, 10_000_000, creator, "sig", now,
        )  # fmt: skip
        await node.commerce.held.add(held)
        sold = LicenceRow(
            str(Pubkey.new_unique()), f"{creator}/wc", "pro", "licence", "^1", 0, 0,
            50_000_000, buyer, "sig", now,
        )  # fmt: skip
        await node.commerce.sold.add(sold)
        page = await call(client.get, node.api_url + "/wallet")
        licences = page.text.split('id="licences"')[1].split("</table>")[0]
        assert held.mint in licences and "active" in licences and "monthly" in licences
        expiry = datetime.datetime.fromtimestamp(held.expires, tz=datetime.UTC)
        assert expiry.strftime("%Y-%m-%d %H:%M:%S UTC") in licences
        sales = page.text.split('id="sales"')[1].split("</table>")[0]
        assert "0.05 SOL" in sales and ">1<" in sales


async def test_a_model_listing_shows_its_model_and_prices_per_1000_tokens(node: Node) -> None:
    model = {"family": "llama", "parameters": 1_200_000, "quantisation": "F16",
             "context_length": 4096, "input_price": 100, "output_price": 300}  # fmt: skip
    tiny = {**LISTING, "name": "tiny-chat", "kind": "model", "price": 0, "royalty_bps": 500,
            "model": model}  # fmt: skip
    shown = (await node.api.registry.publish("default", tiny)).model_dump()
    await node.api.registry.release("default", {"name": "tiny-chat", "version": "1.0.0"})
    with closing(await call(signed_in, node)) as client:
        page = await call(client.get, node.api_url + f"/market/{shown['publisher']}/tiny-chat")
    assert page.status_code == 200, page.text[:500]
    facts = page.text.split('<dl class="facts">')[1].split("</dl>")[0]
    for words in ("llama, 1,200,000 parameters, F16", "4,096 tokens",
                  "input tokens</dt><dd>0.0000001 SOL (100 lamports)",
                  "output tokens</dt><dd>0.0000003 SOL (300 lamports)"):  # fmt: skip
        assert words in facts, words
    assert "Price per 1,000 input tokens" in facts
    assert "Price per run" not in facts and "Run this" not in page.text
    assert '<td data-label="Build">none</td>' in page.text
