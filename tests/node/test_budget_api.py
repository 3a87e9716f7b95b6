"""A run's budget through the control API and MCP: the most a whole run may cost,
a composite agent's sub-calls included. It is checked like a price, weighed in
full against [spending], part of what an idempotency key stands for; a run
answers with its cost and its sub-calls, and the task log shows them."""

from __future__ import annotations

import base64
import secrets
import time
from pathlib import Path

import pytest

from mercato.node import ControlClient, ControlError, Node
from mercato.node.control._api import _request_hash, subcall_views
from mercato.node.models import InferReceipt
from mercato.node.tasks import KeyReused, Receipt, SubCall, TaskRecord, UnknownAgent
from mercato.node.tasks._messages import encode_subcalls
from mercato.p2p import Keypair
from mercato.runtime import HostStatus
from mercato.settlement import open_embedded_ledger

from .test_control_api import call
from .test_registry_network import running_nodes
from .test_tasks import LISTING, serve_an_agent

PRICE = 1000
TOO_MUCH = 10**15 + 1


async def refused(code: str, status: int, run) -> ControlError:
    with pytest.raises(ControlError) as caught:
        await run
    assert (caught.value.status, caught.value.code) == (status, code), caught.value
    return caught.value


async def test_a_budget_out_of_range_is_refused_naming_it(node: Node) -> None:
    client = ControlClient(node.datadir)
    for path in ("/v1/tasks/run", "/v1/tasks/quote"):
        for bad in (-1, TOO_MUCH, "5", 1.5):
            with pytest.raises(ControlError, match="budget") as caught:
                await call(client.request, "POST", path, {"agent": "a/b", "budget": bad})
            assert (caught.value.status, caught.value.code) == (400, "bad_body"), (path, bad)
    tasks = node.api.tasks
    for bad in (-1, TOO_MUCH):  # the facade checks it too, for callers in process
        error = await refused("bad_body", 400, tasks.run("a/b", "*", b"x", budget=bad))
        assert "budget is a whole number of lamports from 0 to" in str(error)
        await refused("bad_body", 400, tasks.quote("a/b", budget=bad))
    assert (await call(client.tasks))["tasks"] == []  # nothing ran, nothing recorded


async def test_spending_limits_weigh_the_budget_whatever_the_price(tmp_path: Path) -> None:
    limits = {"max_per_task": 5000, "approve_above": 2000, "max_per_day": 3000}
    async with running_nodes(tmp_path, 1, spending=limits) as (node,):
        listing = {**LISTING, "name": "free", "price": 0, "royalty_bps": 0}
        publisher = (await node.registry.publish("default", listing))["publisher"]
        agent = f"{publisher}/free"  # listed here at 0, released nowhere
        tasks = node.api.tasks

        error = await refused("over_task_limit", 403, tasks.run(agent, "*", b"x", budget=6000))
        assert "the budget of 6000 lamports" in str(error) and "max_per_task" in str(error)
        error = await refused("approval_needed", 403, tasks.run(agent, "*", b"x", budget=2500))
        assert "above 2000 lamports" in str(error) and "the same budget" in str(error)
        client = ControlClient(node.datadir)
        body = {"agent": agent, "budget": 6000, "approved": True}
        with pytest.raises(ControlError, match="budget of 6000") as caught:
            await call(client.request, "POST", "/v1/tasks/run", body)
        assert caught.value.status == 403 and caught.value.code == "over_task_limit"

        # Approved, over what is left today: it runs with what is left, the price
        # capped by it too, and holds it until released.
        cap, most, held = await tasks._admit(agent, None, True, 2500)
        assert (cap, most, held.limit) == (2500, 2500, 2500)
        assert (await tasks.spending()).reserved == 2500
        try:
            cap, most, second = await tasks._admit(agent, 4000, True, 2000)
            assert (cap, most, second.limit) == (500, 500, 500)  # 3000 - 2500 left
            node.tasks.spending.release(second)
        finally:
            node.tasks.spending.release(held)
        cap, most, free = await tasks._admit(agent, None, False, 0)  # nothing asked
        assert (cap, most, free.limit) == (0, 0, None)
        assert await tasks._admit(agent, None, False) == (None, None, free)  # as before budgets

        # Within the limits the run is let through, to find no release to run.
        for run in (tasks.run(agent, "*", b"x", budget=1500), tasks.run(agent, "*", b"x")):
            with pytest.raises(UnknownAgent):
                await run
        assert (await tasks.spending()).reserved == 0


def test_the_budget_is_part_of_what_an_idempotency_key_stands_for() -> None:
    plain = _request_hash("a/b", "*", b"x", None, None)
    assert _request_hash("a/b", "*", b"x", None, None, None) == plain  # keys kept from before
    with_budget = _request_hash("a/b", "*", b"x", None, None, 500)
    assert with_budget not in (plain, _request_hash("a/b", "*", b"x", None, None, 501))
    assert _request_hash("a/b", "*", b"x", None, None, 0) != plain


def _task_receipt(provider: Keypair, user: str, parent: bytes, **fields) -> Receipt:
    body = dict(
        task=secrets.token_bytes(16), agent="pub/sub", version="1.0.0", cid="bld-1",
        input_hash=b"\x00" * 32, output_hash=b"\x01" * 32, outcome="ok", fuel=1, wall_ms=2,
        price=300, provider=provider.peer_id, user=user, time=int(time.time()), parent=parent,
    )  # fmt: skip
    return Receipt(**{**body, **fields})


def _infer_receipt(provider: Keypair, user: str, parent: bytes) -> InferReceipt:
    return InferReceipt(
        call=secrets.token_bytes(16), model="pub/llama", provider=provider.peer_id, user=user,
        request_hash=b"\x02" * 32, output_hash=b"\x03" * 32, chunks=1, input_tokens=10,
        output_tokens=20, input_price=1000, output_price=1000, price=30, outcome="ok",
        wall_ms=5, time=int(time.time()), parent=parent,
    )  # fmt: skip


def _composite(node_peer: str) -> tuple[bytes, list[SubCall], dict[str, str]]:
    """A composite agent's signed receipt with three sub-calls: an agent that ran,
    a model that answered, and a call refused over budget; and who served which."""
    top, sub, model = Keypair.generate(), Keypair.generate(), Keypair.generate()
    task = secrets.token_bytes(16)
    called = _task_receipt(sub, top.peer_id, task).sign(sub)
    inferred = _infer_receipt(model, top.peer_id, task).sign(model)
    calls = [
        SubCall("call", "pub/sub", 0, "", called, 300),
        SubCall("infer", "pub/llama", 0, "", inferred, 30),
        SubCall("call", "pub/dear", int(HostStatus.OVER_BUDGET), "costs too much", b"", 0),
    ]
    receipt = _task_receipt(
        top, node_peer, b"", task=task, agent="pub/top", price=PRICE,
        subcalls=encode_subcalls(calls), subcalls_cost=330,
    )  # fmt: skip
    return receipt.sign(top), calls, {"sub": sub.peer_id, "model": model.peer_id}


def test_sub_calls_show_their_status_name_cost_and_provider_by_receipt() -> None:
    _, calls, who = _composite("12D3KooWuser")
    views = [v.model_dump() for v in subcall_views(calls)]
    assert [(v["op"], v["target"], v["status"], v["status_name"], v["cost"]) for v in views] == [
        ("call", "pub/sub", 0, "ok", 300),
        ("infer", "pub/llama", 0, "ok", 30),
        ("call", "pub/dear", -2, "over_budget", 0),
    ]
    assert [v["provider"] for v in views] == [who["sub"], who["model"], ""]
    assert base64.b64decode(views[0]["receipt_signed"]) == calls[0].receipt
    assert views[2]["receipt_signed"] == "" and views[2]["error"] == "costs too much"
    # A receipt that does not verify names no provider; an unknown status no name.
    forged = SubCall("call", "pub/sub", -40, "", calls[0].receipt[:-1] + b"\x00", 0)
    (view,) = subcall_views([forged])
    assert (view.provider, view.status_name) == ("", "unknown")


async def test_the_task_log_shows_a_composite_receipts_sub_calls(node: Node) -> None:
    signed, calls, who = _composite(node.overlay.peer_id)
    record = TaskRecord(
        Receipt.verify(signed).task.hex(), "user", "pub/top", "1.0.0", "provider-peer",
        node.overlay.peer_id, "ok", PRICE, time.time(), 120, "receipt", "", [], signed,
    )  # fmt: skip
    await node.tasks.tasklog.write(record)
    client = ControlClient(node.datadir)
    (side,) = (await call(client.task, record.id))["sides"]
    assert "receipt_error" not in side
    receipt = side["receipt"]
    assert receipt["subcalls_cost"] == 330 and "parent" not in receipt  # not a sub-call
    assert [c["target"] for c in receipt["subcalls"]] == ["pub/sub", "pub/llama", "pub/dear"]
    assert receipt["subcalls"][0]["receipt"] == calls[0].receipt.hex()  # bytes as hex
    assert [(c["status_name"], c["provider"]) for c in side["subcalls"]] == [
        ("ok", who["sub"]), ("ok", who["model"]), ("over_budget", ""),
    ]  # fmt: skip
    listed = (await call(client.tasks))["tasks"]
    assert [(t["id"], t["subcalls"]) for t in listed] == [(record.id, [])]  # one task's view only


@pytest.mark.slow
async def test_a_plain_run_costs_its_price_and_a_key_stands_for_its_budget(
    tmp_path: Path,
) -> None:
    from .test_mcp import http_client

    async with (
        open_embedded_ledger(tmp_path / "ledger.db") as ledger,
        running_nodes(
            tmp_path, 2, ledger=ledger, serve={"heartbeat_s": 0.5, "card_ttl_s": 5.0},
            tasks={"verify_first": 0, "verify_rate": 0.0}, spending={"approve_above": 3 * PRICE},
        ) as (provider, user),
    ):  # fmt: skip
        await user.overlay.host.connect(provider.overlay.host.listen_addrs()[0])
        agent = await serve_an_agent(provider, user, PRICE)
        tasks = user.api.tasks

        quote = await tasks.quote(agent, "*", 3, budget=5 * PRICE)
        assert (quote.price, quote.subcalls_max, quote.most) == (PRICE, 0, PRICE)  # calls none
        assert quote.needs_approval  # a run is weighed by its budget, over approve_above
        assert not (await tasks.quote(agent, "*", 3)).needs_approval
        await refused("approval_needed", 403, tasks.run(agent, "*", b"a b", budget=5 * PRICE))
        done = await tasks.run(agent, "*", b"a b", None, None, True, "k", budget=5 * PRICE)
        assert (done.cost, done.subcalls) == (PRICE, [])
        assert "subcalls" not in done.receipt and done.receipt["price"] == PRICE
        again = await tasks.run(agent, "*", b"a b", None, None, True, "k", budget=5 * PRICE)
        assert again == done
        with pytest.raises(KeyReused):
            await tasks.run(agent, "*", b"a b", None, None, True, "k", budget=6 * PRICE)
        client = ControlClient(user.datadir, timeout=60)
        body = {
            "agent": agent, "input": base64.b64encode(b"a b").decode(), "budget": 6 * PRICE,
            "approved": True, "idempotency_key": "k",
        }  # fmt: skip
        with pytest.raises(ControlError) as conflict:
            await call(client.request, "POST", "/v1/tasks/run", body)
        assert (conflict.value.status, conflict.value.code) == (409, "idempotency_conflict")

        plain = await call(client.run_task, agent, "*", b"one two three")
        assert (plain["cost"], plain["subcalls"]) == (PRICE, [])
        (side,) = (await call(client.task, plain["task"]))["sides"]
        assert side["subcalls"] == [] and "subcalls" not in side["receipt"]

        async with http_client(user) as mcp:
            offer = await mcp.call_tool("quote", {"agent": agent, "budget": 2 * PRICE})
            assert not offer.is_error
            assert (offer.structured_content["most"], offer.structured_content["subcalls_max"]) == (
                PRICE, 0,
            )  # fmt: skip
            ran = await mcp.call_tool(
                "run_agent", {"agent": agent, "input_text": "x", "budget": 2 * PRICE}
            )
            assert not ran.is_error
            result = ran.structured_content
            assert (result["price"], result["cost"], result["subcalls"]) == (PRICE, PRICE, [])
            bad = await mcp.call_tool("run_agent", {"agent": agent, "budget": -1})
            assert bad.is_error and "budget" in " ".join(c.text for c in bad.content)
