"""The registry across many real nodes (in one process): partitions heal and converge."""

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio

from mercato.crdt import Query
from mercato.node import Config, DataDir, Node, init_data_dir

pytestmark = pytest.mark.slow
N = 20


def manifest(name: str) -> dict:
    return {
        "name": name,
        "kind": "agent",
        "title": name,
        "summary": f"{name} does things.",
        "price": 1,
        "royalty_bps": 0,
    }


@asynccontextmanager
async def running_nodes(
    root: Path,
    n: int,
    serve: dict | None = None,
    tasks: dict | None = None,
    ledger: object | None = None,
    spending: dict | None = None,
    **builds: object,
) -> AsyncIterator[list[Node]]:
    """``n`` nodes in this process on loopback; ``builds``, ``serve``, ``tasks`` and
    ``spending`` override keys of those sections; ``ledger`` (one embedded ledger)
    is shared."""
    config = (
        Config()
        .replace("api", port=0)
        .replace("p2p", listen=("/ip4/127.0.0.1/tcp/0",), mdns=False, target_peers=0)
        .replace("builds", **builds)
        .replace("serve", **(serve or {}))
        .replace("tasks", **(tasks or {}))
        .replace("spending", **(spending or {}))
    )
    async with AsyncExitStack() as stack:
        nursery = await stack.enter_async_context(trio.open_nursery())
        nodes = []
        for i in range(n):
            datadir = DataDir(root / f"n{i}")
            await trio.to_thread.run_sync(init_data_dir, datadir)
            node = Node(datadir, config, ledger=ledger)
            await nursery.start(node.run)
            nodes.append(node)
        yield nodes
        for node in nodes:
            node.request_stop()


async def wait_converged(nodes: list[Node], within: float) -> None:
    with trio.fail_after(within):
        while True:
            states = [await n.store.run(n.registry.replica.states) for n in nodes]
            if all(s == states[0] for s in states) and len(states[0]) == 10:  # 10 publishers
                return
            await trio.sleep(0.2)


async def test_two_partitions_publish_then_heal_and_converge(tmp_path: Path) -> None:
    async with running_nodes(tmp_path, N) as nodes:
        left, right = nodes[: N // 2], nodes[N // 2 :]
        for side in (left, right):
            for node in side[1:]:
                await node.overlay.host.connect(side[0].overlay.host.listen_addrs()[0])
        for i in range(5):
            await left[i].registry.publish("default", manifest(f"left-{i}"))
            await right[i].registry.publish("default", manifest(f"right-{i}"))
        # Heal: one link between the partitions.
        await right[-1].overlay.host.connect(left[-1].overlay.host.listen_addrs()[0])
        await wait_converged(nodes, within=60)
        for node in (nodes[0], nodes[-1]):
            page = await node.registry.search(Query(limit=100))
            assert sorted(r["name"] for r in page["results"]) == sorted(
                [f"left-{i}" for i in range(5)] + [f"right-{i}" for i in range(5)]
            )


async def test_an_empty_node_catches_up_by_anti_entropy_alone(tmp_path: Path) -> None:
    """Published before the others joined, so gossip never carries it: only sync can."""
    async with running_nodes(tmp_path, 3) as (a, b, c):
        for i in range(3):
            await a.registry.publish("default", manifest(f"early-{i}"))
        await b.overlay.host.connect(a.overlay.host.listen_addrs()[0])
        await c.overlay.host.connect(b.overlay.host.listen_addrs()[0])  # c reaches a through b
        with trio.fail_after(30):
            while True:
                page = await c.registry.search(Query(limit=10))
                if len(page["results"]) == 3:
                    break
                await trio.sleep(0.1)
        assert await c.store.run(c.registry.replica.states) == await a.store.run(
            a.registry.replica.states
        )
