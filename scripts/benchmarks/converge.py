"""registry-converge: a partition heals; how fast and at what cost do 20 nodes agree?

20 real nodes (`node.Node`, each with its own SQLite store and libp2p host on
loopback) run in this one process, so they share one core: a harsher setting
than 20 daemons on their own machines. They form two partitions of 10. The
left side holds 10,000 listings of 10 publishers, as their publishers' nodes
left them: each feed compacted by its publisher every COMPACT_AFTER writes, so
a feed is one signed snapshot plus the updates after it. The right side holds
nothing. Then one link joins the two sides.

Figures:
- converge_s: from the link until every node holds the same state of every feed;
- bytes_ratio: bytes of anti-entropy exchanged during that time (every request
  and response of /mercato/sync/3.0.0, counted where received) over the size of
  the signed updates the right side lacked, times the 10 nodes that lacked them;
- index_s: after converging, the time one right node then takes to bring its
  search index up to date (it runs before the first search).
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from mercato.crdt import SYNC, FeedWriter, RegistryStore, SignedUpdate
from mercato.node import Node, node_database
from mercato.p2p import Keypair

from ._nodes import running_nodes
from .registry import _listing

NODES = 20
PUBLISHERS = 10


def _published(listings: int) -> tuple[list[bytes], int]:
    """What the publishers' nodes hold after writing ``listings``: compacted journals."""
    root = Path(tempfile.mkdtemp(prefix="mercato-converge-author-"))
    try:
        db = node_database(root / "node.db")
        author = RegistryStore(db.conn)
        writers = [FeedWriter(Keypair.generate(), author.registry) for _ in range(PUBLISHERS)]
        rng = random.Random(11)
        for i in range(listings):
            writer = writers[i % PUBLISHERS]
            name = f"agent-{i}"
            author.commit_own(writer.put_listing(_listing(rng, i)), name)
            author.compact_own(writer)
        updates, more = author.missing_for({}, 1 << 40)
        assert not more
        db.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return updates, listings


def _sync_bytes(nodes: list[Node]) -> int:
    return sum(n.overlay.requests.statistics().bytes_in.get(SYNC.id, 0) for n in nodes)


async def _states(node: Node) -> dict[str, bytes]:
    return await node.store.run(node.registry.replica.states)


async def _run(root: Path, listings: int) -> dict[str, Any]:
    updates, _ = await trio.to_thread.run_sync(_published, listings)
    missing_bytes = sum(len(u) for u in updates)
    async with running_nodes(root, NODES) as nodes:
        left, right = nodes[: NODES // 2], nodes[NODES // 2 :]
        decoded = [SignedUpdate.decode(u) for u in updates]
        for node in left:
            outcomes = await node.store.run(node.registry.replica.ingest_batch, decoded)
            assert all(isinstance(o, list) for o in outcomes), "seeding failed"
        for side in (left, right):
            for node in side[1:]:
                await node.overlay.host.connect(side[0].overlay.host.listen_addrs()[0])
        target = await _states(left[0])
        await trio.sleep(2 * 5.0)  # let each side's own sync rounds settle first

        bytes_before = _sync_bytes(nodes)
        started = time.perf_counter()
        await right[-1].overlay.host.connect(left[-1].overlay.host.listen_addrs()[0])
        with trio.fail_after(300):
            while True:
                states = [await _states(n) for n in right]
                if all(s == target for s in states):
                    break
                await trio.sleep(0.05)
        converge_s = time.perf_counter() - started
        exchanged = _sync_bytes(nodes) - bytes_before

        started = time.perf_counter()
        indexed = await right[0].store.run(right[0].registry.replica.flush_index)
        index_s = time.perf_counter() - started
    return {
        "nodes": NODES,
        "listings": listings,
        "publishers": PUBLISHERS,
        "journaled_updates": len(updates),
        "missing_bytes_per_node": missing_bytes,
        "converge_s": round(converge_s, 2),
        "sync_bytes": exchanged,
        "bytes_ratio": round(exchanged / (missing_bytes * len(right)), 3),
        "index_s": round(index_s, 2),
        "indexed_listings": indexed,
        "targets": {"converge_s": 10, "bytes_ratio": 2.0},
    }


def run(listings: int = 10_000) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="mercato-converge-"))
    try:
        return trio.run(_run, root, listings)
    finally:
        shutil.rmtree(root, ignore_errors=True)
