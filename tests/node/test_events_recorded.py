"""A node says what it did: the event log and the log lines of a paid task, on the
provider's side and the user's, and of its channel's opening and close; and the
warning of a node asked to serve a listing its registry does not have."""

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from solders.pubkey import Pubkey

from mercato.node import Node
from mercato.settlement import open_embedded_ledger

from ..conftest import budget
from .test_registry_network import running_nodes
from .test_tasks import serve_an_agent, until

PRICE = 1_000_000
INPUT = b"secret input words"


async def kinds(node: Node, kind: str) -> list[dict[str, Any]]:
    """The node's events of ``kind`` (or family), as the control API lists them."""
    found = await node.api.node.events(0, 1000, kind)
    return [e.model_dump(mode="json") for e in found.events]


def fields(caplog: pytest.LogCaptureFixture, message: str) -> list[dict[str, Any]]:
    """The structured fields of the records whose message starts with ``message``."""
    return [vars(r) for r in caplog.records if r.getMessage().startswith(message)]


@pytest.mark.slow
async def test_a_paid_task_is_in_both_event_logs_and_the_providers_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mercato")
    fast = {"heartbeat_s": 0.5, "card_ttl_s": 5.0}
    async with (
        open_embedded_ledger(tmp_path / "ledger.db") as ledger,
        running_nodes(tmp_path, 2, serve=fast, ledger=ledger) as (provider, user),
    ):
        await user.overlay.host.connect(provider.overlay.host.listen_addrs()[0])
        agent = await serve_an_agent(provider, user, PRICE)
        done = await user.tasks.run_task(agent, "*", INPUT)
        task, stake = done["task"], done["receipt"].channel
        me, them = user.overlay.peer_id, provider.overlay.peer_id

        async def recorded() -> bool:  # appended with the task logs' next batch
            return bool(await kinds(provider, "payment") and await kinds(user, "payment"))

        await until(recorded, budget(10), "the payments' events")
        served = [e["data"] for e in await kinds(provider, "task")]
        assert served == [
            {"id": task, "agent": agent, "version": "1.0.0", "user": me, "price": PRICE,
             "outcome": "ok", "ms": done["receipt"].wall_ms, "channel": stake}
        ]  # fmt: skip
        assert [e["kind"] for e in await kinds(provider, "task")] == ["task.served"]
        (received,) = [e["data"] for e in await kinds(provider, "payment.received")]
        assert received == {
            "channel": stake, "peer": me, "amount": PRICE, "earned": PRICE, "task": task
        }  # fmt: skip
        (run,) = await kinds(user, "task")
        assert run["kind"] == "task.run"
        assert run["data"] == {"id": task, "agent": agent, "version": "1.0.0",
                               "provider": them, "price": PRICE, "outcome": "ok"}  # fmt: skip
        (sent,) = [e["data"] for e in await kinds(user, "payment.sent")]
        assert sent == {"channel": stake, "peer": them, "amount": PRICE, "task": task}
        opened = {n: await kinds(n, "channel.opened") for n in (provider, user)}
        assert [e["data"]["role"] for e in opened[provider]] == ["payee"]
        assert [e["data"]["role"] for e in opened[user]] == ["payer"]
        assert {e["data"]["stake"] for es in opened.values() for e in es} == {stake}

        # The provider's log has a line for the task served and its payment.
        (line,) = fields(caplog, "task served")
        assert (line["agent"], line["user"], line["price"], line["outcome"]) == (
            agent, me, PRICE, "ok"
        )  # fmt: skip
        assert line["ms"] == done["receipt"].wall_ms and line["task"] == task
        (paid,) = fields(caplog, "payment received")
        assert (paid["channel"], paid["peer"], paid["lamports"]) == (stake, me, PRICE)

        # The close: the provider's event says what the ledger paid it.
        wallet = Pubkey.from_string(provider.settlement.address)
        before = await ledger.balance(wallet)
        settled = await provider.api.money.close(stake)

        async def closed_recorded() -> bool:
            return bool(await kinds(provider, "channel.closed"))

        await until(closed_recorded, budget(10), "the close's event")
        (closed,) = [e["data"] for e in await kinds(provider, "channel.closed")]
        assert closed == {
            "stake": stake, "role": "payee", "peer": me, "paid": PRICE, "earned": PRICE,
            "signature": settled.signature,
        }  # fmt: skip
        fees = 2 * 5000  # the close's two signatures
        assert await ledger.balance(wallet) - before == closed["earned"] - fees
        assert fields(caplog, "channel closed: 1000000 lamports, 1000000 of them to this node")

        # No task input in any event, on either side; and the chains still hold.
        for node in (provider, user):
            everything = json.dumps(await kinds(node, ""))
            assert INPUT.decode() not in everything and INPUT.hex() not in everything
            assert (await node.api.node.events_verify()).ok


async def test_serving_a_listing_not_in_the_registry_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mercato")
    ref = "GxScsWMuLUrkWbhJpAf6PeAkqkqMV3QYZKdMSGgZMaUk/wordcount"
    async with running_nodes(tmp_path, 1, serve={"agents": (ref,)}) as (node,):
        warning = f"{ref} is not in the registry yet: it will be served once its listing"

        async def warned() -> bool:
            return any(r.getMessage().startswith(warning) for r in caplog.records)

        await until(warned, budget(10), "the warning")
        await node.tasks._servable()  # the served set read again: no second warning
        assert len([r for r in caplog.records if r.getMessage().startswith(warning)]) == 1
        assert node.tasks.serving == (ref,)  # still asked for: served once it arrives
