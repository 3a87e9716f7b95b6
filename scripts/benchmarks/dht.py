"""DHT benchmark: signed-record lookups in a 50-node network, and first-connection time.

The 50 overlays share one process (fifty processes would not fit two cores
with room to measure); lookups run one at a time, each from a node that holds
no copy of the record, so every one crosses the network. A first connection is
a fresh dial of a peer never seen: TCP, Noise, Yamux and identify.
"""

from __future__ import annotations

import random
import time
from typing import Any

import trio

from mercato.p2p import Keypair, make_record, open_overlay

from ._net import CONFIG, median, network, percentile, quiet

NODES = 50
LOOKUPS = 60
CONNECTS = 20


async def _lookups() -> dict[str, Any]:
    rng = random.Random(3)
    times, hits = [], 0
    async with network(NODES) as nodes:
        # Let the DHT of every node see its peers before measuring.
        with trio.fail_after(60):
            while min(n.dht.routing_table_size() for n in nodes) < 3:  # noqa: ASYNC110
                await trio.sleep(0.2)
        owners = [Keypair.generate() for _ in range(LOOKUPS)]
        for owner in owners:
            writer = rng.choice(nodes)
            await writer.dht.put(make_record(owner, "card", b"x" * 200, ttl_s=600))
        for owner in owners:
            key = f"/mercato/{owner.address}/card"
            readers = [n for n in nodes if key not in _local_keys(n)]
            reader = rng.choice(readers or nodes)
            started = time.perf_counter()
            record = await reader.dht.get(owner.address, "card")
            times.append((time.perf_counter() - started) * 1000)
            hits += record is not None
        table = sorted(n.dht.routing_table_size() for n in nodes)
    return {
        "nodes": NODES,
        "lookups": LOOKUPS,
        "lookup_p50_ms": round(median(times), 2),
        "lookup_p99_ms": round(percentile(times, 0.99), 2),
        "lookup_success": round(hits / LOOKUPS, 3),
        "routing_table_median": table[len(table) // 2],
    }


def _local_keys(node) -> set[str]:
    try:
        return {k.decode() if isinstance(k, bytes) else k for k in node.dht._kad.value_store.store}
    except Exception:
        return set()


async def _connects() -> dict[str, Any]:
    times = []
    async with open_overlay(Keypair.generate(), CONFIG) as target:
        quiet()
        for _ in range(CONNECTS):
            async with open_overlay(Keypair.generate(), CONFIG) as dialer:
                started = time.perf_counter()
                peer = await dialer.host.connect(target.host.listen_addrs()[0])
                with trio.fail_after(5):  # identify done: the peer's protocols are known
                    while not dialer.host.protocols_of(peer):  # noqa: ASYNC110
                        await trio.sleep(0.001)
                times.append((time.perf_counter() - started) * 1000)
    return {"connect_p50_ms": round(median(times), 2), "connects": CONNECTS}


def run() -> dict[str, Any]:
    result = trio.run(_lookups)
    result.update(trio.run(_connects))
    result["targets"] = {"lookup_p50_ms": 100, "lookup_p99_ms": 500}
    return result
