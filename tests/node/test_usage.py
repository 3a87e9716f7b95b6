"""Model calls in the task log: their tokens (node migration 11, which gives the
tasks logged before it 0), `GET /v1/usage` on a real node, and a stored receipt
of another kind than a task's, shown unchecked instead of failing."""

from __future__ import annotations

import secrets
import sqlite3
import time
from pathlib import Path

import pytest
import trio

from mercato.node import MIGRATIONS, SCHEMA_VERSION, ControlClient, ControlError, Database, Node
from mercato.node import open_node_store as open_store
from mercato.node.tasks import TOKENS_SCHEMA, TaskLog, TaskRecord
from mercato.p2p import Keypair, canonical_cbor

from .test_control_api import call
from .test_web_pages import a_task

DAY_S = 86_400
MODEL = "8Co4tt4sbELaV8uRcbz31ojp8QdazK5MxczX8j1d5EoB/llama"
OTHER = "8Co4tt4sbELaV8uRcbz31ojp8QdazK5MxczX8j1d5EoB/qwen"


def a_call(
    role: str,
    agent: str = MODEL,
    *,
    status: str = "ok",
    price: int = 0,
    tokens: tuple[int, int] = (0, 0),
    age_s: float = 0.0,
    receipt: bytes | None = None,
) -> TaskRecord:
    """A model call (or, with no tokens, an agent's task) as the task log holds it."""
    return TaskRecord(
        secrets.token_hex(16), role, agent, "1.0.0", "provider-peer", "user-peer", status,
        price, time.time() - age_s, 120, "", "", [], receipt, *tokens,
    )  # fmt: skip


async def test_migration_11_adds_the_token_columns_and_old_tasks_get_0(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    Database(path, MIGRATIONS[: MIGRATIONS.index(TOKENS_SCHEMA)]).close()  # the schema before
    conn = sqlite3.connect(path)
    old = (
        "ab" * 16, "user", "pub/agent", "1.0.0", "prov", "me", "ok", 5000, 1.0e9, 40, "local",
        "", "[]", None,
    )  # fmt: skip
    conn.execute(f"INSERT INTO tasks VALUES ({','.join('?' * len(old))})", old)
    conn.commit()
    conn.close()

    async with open_store(path) as store, trio.open_nursery() as nursery:
        assert store.db.schema_version == SCHEMA_VERSION
        log = TaskLog(store)
        await nursery.start(log.run)
        await log.write(a_call("user", price=300, tokens=(12, 34)))
        (kept,) = await log.get("ab" * 16)
        both = await log.recent(10)
        nursery.cancel_scope.cancel()
    assert (kept.agent, kept.price) == ("pub/agent", 5000)
    assert (kept.input_tokens, kept.output_tokens) == (0, 0)
    assert [(r.input_tokens, r.output_tokens) for r in both] == [(12, 34), (0, 0)]


async def test_usage_sums_calls_tokens_and_lamports_per_side_and_listing(node: Node) -> None:
    log = node.tasks.tasklog
    for record in (
        a_call("user", price=300, tokens=(10, 20)),
        a_call("user", price=500, tokens=(30, 40)),
        a_call("user", status="failed", tokens=(5, 0)),
        a_call("user", OTHER, price=900, tokens=(1, 2)),
        a_call("user", "pub/agent", price=70),  # an agent's task: no tokens
        a_call("provider", price=250, tokens=(7, 8)),
        a_call("user", price=10**6, tokens=(99, 99), age_s=40 * DAY_S),  # out of the window
    ):
        await log.write(record)
    client = ControlClient(node.datadir)
    shown = await call(client.usage)
    assert shown["days"] == 30 and time.time() - 30 * DAY_S - 5 < shown["since"] < time.time()
    assert shown["usage"] == [  # the user's side first, then the most lamports first
        {"role": "user", "agent": OTHER, "calls": 1, "calls_ok": 1,
         "input_tokens": 1, "output_tokens": 2, "lamports": 900},
        {"role": "user", "agent": MODEL, "calls": 3, "calls_ok": 2,
         "input_tokens": 45, "output_tokens": 60, "lamports": 800},
        {"role": "user", "agent": "pub/agent", "calls": 1, "calls_ok": 1,
         "input_tokens": 0, "output_tokens": 0, "lamports": 70},
        {"role": "provider", "agent": MODEL, "calls": 1, "calls_ok": 1,
         "input_tokens": 7, "output_tokens": 8, "lamports": 250},
    ]  # fmt: skip
    assert shown["totals"] == {
        "user": {"calls": 5, "calls_ok": 4, "input_tokens": 46, "output_tokens": 62,
                 "lamports": 1770},
        "provider": {"calls": 1, "calls_ok": 1, "input_tokens": 7, "output_tokens": 8,
                     "lamports": 250},
    }  # fmt: skip
    longer = await call(client.usage, 60)
    assert longer["totals"]["user"]["lamports"] == 1770 + 10**6
    local = (await node.api.tasks.usage(60)).model_dump(mode="json")
    assert {**local, "since": 0} == {**longer, "since": 0}  # the facade gives the same
    for days in (0, 3661):
        with pytest.raises(ControlError, match="days") as refused:
            await call(client.usage, days)
        assert refused.value.status == 400


async def test_a_task_shows_its_tokens_and_a_receipt_of_another_kind_unchecked(
    node: Node,
) -> None:
    provider = Keypair.generate()
    body = {"provider": provider.peer_id, "model": MODEL, "input_tokens": 12, "call": b"\x01\x02"}
    other_kind = canonical_cbor({"body": body, "sig": provider.sign("infer-receipt", body)})
    record = a_call("user", price=300, tokens=(12, 34), receipt=other_kind)
    await node.tasks.tasklog.write(record)
    client = ControlClient(node.datadir)
    (side,) = (await call(client.task, record.id))["sides"]
    assert (side["input_tokens"], side["output_tokens"]) == (12, 34)
    assert side["receipt"] == {**body, "call": "0102"}  # bytes as hex
    assert "shown unchecked" in side["receipt_error"]
    listed = (await call(client.tasks))["tasks"]
    assert [(t["id"], t["input_tokens"], t["output_tokens"]) for t in listed] == [
        (record.id, 12, 34)
    ]
    # A task's own receipt still checks out, and garbage shows no body.
    task = await a_task(node, "pub/agent", receipt=True)
    (checked,) = (await call(client.task, task))["sides"]
    assert "receipt_error" not in checked and checked["receipt"]["outcome"] == "ok"
    assert (checked["input_tokens"], checked["output_tokens"]) == (0, 0)
    junk = a_call("user", receipt=b"junk")
    await node.tasks.tasklog.write(junk)
    (bad,) = (await call(client.task, junk.id))["sides"]
    assert bad["receipt"] is None and "does not decode" in bad["receipt_error"]
