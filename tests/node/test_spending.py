"""Spending limits, quotes and idempotent runs: the node enforces [spending] on
every run it is asked for, and a run asked with an idempotency key runs and
pays once, whatever the retries."""

import base64
import datetime
import json
from pathlib import Path

import pytest
import trio
import trio.lowlevel
import trio.testing

from mercato.node import ControlClient, ControlError, open_node_store
from mercato.node.tasks import Budget, KeyReused, RunKeys, SpendLog, day_start
from mercato.settlement import open_embedded_ledger

from ..conftest import budget
from .test_registry_network import running_nodes
from .test_tasks import serve_an_agent

PRICE = 10_000_000


def words(done) -> int:
    return json.loads(base64.b64decode(done.output))["words"]


def paid(node) -> int:
    return sum(c["paid"] for c in node.settlement.channels() if c["role"] == "payer")


async def refused(code: str, call) -> ControlError:
    with pytest.raises(ControlError) as caught:
        await call
    assert (caught.value.status, caught.value.code) == (403, code), caught.value
    return caught.value


@pytest.mark.slow
async def test_limits_quotes_and_idempotent_runs_on_real_nodes(tmp_path: Path) -> None:
    day_limit = 3 * PRICE + PRICE // 2  # three tasks, and half a price left
    limits = {"max_per_task": 2 * PRICE, "max_per_day": day_limit, "approve_above": PRICE // 2}
    async with (
        open_embedded_ledger(tmp_path / "shared-ledger.db") as ledger,
        running_nodes(
            tmp_path,
            2,
            serve={"heartbeat_s": 0.5, "card_ttl_s": 5.0},
            tasks={"verify_first": 0, "verify_rate": 0.0},
            ledger=ledger,
            spending=limits,
        ) as (provider, user),
    ):
        await user.overlay.host.connect(provider.overlay.host.listen_addrs()[0])
        agent = await serve_an_agent(provider, user, PRICE)
        tasks = user.api.tasks

        # Over the per-task limit, and above approve_above without approval.
        error = await refused("over_task_limit", tasks.run(agent, "*", b"a", None, 3 * PRICE))
        assert f"{2 * PRICE} lamports a task" in str(error)
        error = await refused("approval_needed", tasks.run(agent, "*", b"a b"))
        assert f"above {PRICE // 2} lamports" in str(error)
        assert paid(user) == 0

        # Quote, "ask the human", run approved on the quote's provider and price.
        quote = await tasks.quote(agent, "*", 3)
        assert (quote.provider, quote.price) == (provider.overlay.peer_id, PRICE)
        assert quote.needs_approval and quote.left_today == day_limit
        first = await tasks.run(
            agent, "*", b"a b", quote.provider, quote.price, approved=True, idempotency_key="k-1"
        )
        assert words(first) == 2 and paid(user) == PRICE

        # A retry with the key gets the first run's result: nothing runs or is paid again.
        again = await tasks.run(
            agent, "*", b"a b", quote.provider, quote.price, approved=True, idempotency_key="k-1"
        )
        assert again == first and paid(user) == PRICE
        assert len(await user.tasks.tasklog.recent(100, "user")) == 1
        with pytest.raises(KeyReused):  # the same key for another input
            await tasks.run(agent, "*", b"other", quote.provider, quote.price, True, "k-1")
        client = ControlClient(user.datadir, timeout=60)
        with pytest.raises(ControlError) as conflict:
            await trio.to_thread.run_sync(
                lambda: client.run_task(
                    agent,
                    "*",
                    b"other",
                    quote.provider,
                    quote.price,
                    approved=True,
                    idempotency_key="k-1",
                )
            )
        assert (conflict.value.status, conflict.value.code) == (409, "idempotency_conflict")

        # Two retries at once with a new key: the second waits for the first's result.
        results = []

        async def keyed() -> None:
            results.append(
                await tasks.run(agent, "*", b"x y z", quote.provider, PRICE, True, "k-2")
            )

        with trio.fail_after(budget(60)):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keyed)
                nursery.start_soon(keyed)
        assert results[0] == results[1] and words(results[0]) == 3
        assert paid(user) == 2 * PRICE
        before = datetime.datetime.now(datetime.UTC).date().isoformat()
        shown = await tasks.spending()
        assert shown.day in (before, datetime.datetime.now(datetime.UTC).date().isoformat())
        assert (shown.spent_today, shown.reserved) == (2 * PRICE, 0)
        assert shown.left_today == day_limit - 2 * PRICE

        # Two runs at once with room for one: the first reserves its cap, the other
        # is refused, whichever finishes first.
        outcomes: list[str] = []

        async def unkeyed() -> None:
            try:
                await tasks.run(agent, "*", b"a", quote.provider, PRICE, approved=True)
                outcomes.append("ran")
            except ControlError as exc:
                outcomes.append(exc.code)

        with trio.fail_after(budget(60)):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(unkeyed)
                nursery.start_soon(unkeyed)
        assert sorted(outcomes) == ["daily_limit", "ran"]
        assert paid(user) == 3 * PRICE

        # Spent until refused: the message says what is left and when it resets.
        error = await refused(
            "daily_limit", tasks.run(agent, "*", b"a", quote.provider, PRICE, approved=True)
        )
        assert f"{PRICE // 2} lamports left today; the limit is {day_limit}" in str(error)
        assert "resets at 00:00 UTC" in str(error)
        shown = await tasks.spending()
        assert (shown.spent_today, shown.reserved, shown.left_today) == (3 * PRICE, 0, PRICE // 2)
        assert (await tasks.quote(agent)).left_today == PRICE // 2
        assert paid(user) == 3 * PRICE


async def test_run_keys_keep_successes_only_and_refuse_another_request(tmp_path: Path) -> None:
    async with open_node_store(tmp_path / "node.db") as store:
        keys = RunKeys(store)
        calls = []

        async def fails() -> str:
            calls.append("fails")
            raise RuntimeError("the run failed")

        async def works() -> str:
            calls.append("works")
            await trio.lowlevel.checkpoint()
            return "result"

        with pytest.raises(RuntimeError):
            await keys.once("k", "request", fails)
        assert await keys.once("k", "request", works) == "result"  # a failure is not kept
        assert await keys.once("k", "request", fails) == "result"  # a success is
        with pytest.raises(KeyReused):
            await keys.once("k", "another request", works)
        assert calls == ["fails", "works"]

        # A retry while the first runs waits for it, and gets its result.
        release = trio.Event()

        async def slow() -> str:
            calls.append("slow")
            await release.wait()
            return "slow result"

        got = []
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(lambda: _append(got, keys.once("s", "r", slow)))
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(KeyReused):  # another request under a key in flight
                await keys.once("s", "other", works)
            release.set()
        assert got == ["slow result", "slow result"] and calls.count("slow") == 1
    async with open_node_store(tmp_path / "node.db") as store:  # durable
        assert await RunKeys(store).once("s", "r", fails) == "slow result"


async def _append(out: list, call) -> None:
    out.append(await call)


async def test_spend_log_counts_today_and_reserves_what_runs_may_still_pay(
    tmp_path: Path,
) -> None:
    async with open_node_store(tmp_path / "node.db") as store:
        log = SpendLog(store)
        held = Budget(500)
        log.hold(held)
        assert log.reserved == 500
        await log.record(200, "provider", "task", held)
        async with log.lock:
            assert await log.totals(datetime.datetime.now(datetime.UTC).timestamp()) == (200, 300)
        log.release(held)
        assert log.reserved == 0
        now = datetime.datetime(2024, 6, 1, 23, 59, tzinfo=datetime.UTC).timestamp()
        assert day_start(now) == datetime.datetime(2024, 6, 1, tzinfo=datetime.UTC).timestamp()
        async with log.lock:
            assert (await log.totals(now + 86_400 * 3650))[0] == 0  # another day
