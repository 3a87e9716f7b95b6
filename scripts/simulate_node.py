"""One real node of ``scripts/simulate.py`` in its own process, driven over stdin.

A real overlay (p2p/: host, GossipSub, Kademlia) and the node's real registry
service (node/registry: the crdt replica on its own SQLite store, its gossip
topic and its anti-entropy), in a temporary data dir removed on exit.

Commands, one per line; each gets one JSON line on stdout:

- ``connect ADDR...``: dial each address (failures are counted, not fatal);
- ``ready MESH TIMEOUT``: wait until the probe topic's mesh has MESH peers and
  the DHT's routing table is not empty, at most TIMEOUT s; answers the sizes;
- ``publish ID SIZE``: publish a probe message (its id and send time first);
- ``report``: every probe received so far, as [id, latency ms];
- ``write COUNT [quiet]``: COUNT new listings on this node's own registry
  feed, each applied, journaled and published as the registry service does it
  (``quiet``: not published; only anti-entropy spreads them);
- ``state``: the replica's anti-entropy digest and how many listings it holds;
- ``split SECONDS PEER...``: ban those peers for SECONDS (p2p's ``ban``: drops
  the connections, refuses them until then), waiting until none is connected;
- ``heal ADDR...``: wait until the bans end, then dial those addresses;
- ``put``: store a signed record under a new key, answer its publisher address;
- ``has ADDRESS``: whether this node holds a copy of that record;
- ``get ADDRESS``: look that record up (``local`` says it was held here already);
- ``provide KEY`` / ``find KEY``: provider records (``agent:PUBLISHER/NAME``);
- ``quit``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._net import lines  # noqa: E402

from mercato.crdt import FeedWriter, sync_digest, validate_listing  # noqa: E402
from mercato.node._events import EventLog  # noqa: E402
from mercato.node._keys import KeyStore  # noqa: E402
from mercato.node._paths import DataDir  # noqa: E402
from mercato.node._schema import open_node_store  # noqa: E402
from mercato.node.registry._service import TOPIC as REGISTRY_TOPIC  # noqa: E402
from mercato.node.registry._service import RegistryService  # noqa: E402
from mercato.p2p import (  # noqa: E402
    DiscoveryConfig,
    GossipMessage,
    HostConfig,
    Keypair,
    OverlayConfig,
    make_record,
    open_overlay,
)

PROBE_TOPIC = "mercato/sim/1"
CONFIG = OverlayConfig(
    host=HostConfig(listen=("/ip4/127.0.0.1/tcp/0",)),
    discovery=DiscoveryConfig(mdns=False),
)
POLL_S = 0.05  # how often a condition is looked at while waiting for it


def say(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def dial_all(node: Any, addrs: list[str]) -> int:
    """Dial each of ``addrs``; how many could not be reached."""
    failed = 0
    for addr in addrs:
        try:
            await node.host.connect(addr)
        except Exception:
            failed += 1
    return failed


async def wait_until(condition: Any, timeout_s: float) -> bool:
    """Wait for ``condition()`` to hold, at most ``timeout_s``; whether it held."""
    with trio.move_on_after(timeout_s):
        while not condition():  # noqa: ASYNC110 (conditions of other tasks and libp2p)
            await trio.sleep(POLL_S)
        return True
    return bool(condition())


def _local_keys(node: Any) -> set[str]:
    try:
        store = node.dht._kad.value_store.store
        return {k.decode() if isinstance(k, bytes) else str(k) for k in store}
    except Exception:
        return set()


async def main() -> None:
    for name in ("libp2p", "mercato", "multiaddr"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    probes: list[list[Any]] = []

    async def probe(message: GossipMessage) -> None:
        (sent,) = struct.unpack(">d", message.data[:8])
        (ident,) = struct.unpack(">q", message.data[8:16])
        probes.append([ident, round((time.time() - sent) * 1000, 3)])

    root = Path(tempfile.mkdtemp(prefix="mercato-sim-"))
    try:
        async with (
            open_node_store(root / "node.db") as store,
            open_overlay(Keypair.generate(), CONFIG) as node,
            trio.open_nursery() as nursery,
        ):
            registry = RegistryService(store, KeyStore(DataDir(root)), EventLog(store.db), node)
            await nursery.start(registry.run)
            await node.gossip.subscribe(PROBE_TOPIC, probe)
            say({"addr": node.host.listen_addrs()[0], "peer": node.peer_id, "pid": os.getpid()})
            author = Keypair.generate()
            written = 0
            stdin = trio.lowlevel.FdStream(os.dup(0))
            async for line in lines(stdin):
                cmd, *args = line.split()
                if cmd == "connect":
                    say({"ok": True, "failed": await dial_all(node, args)})
                elif cmd == "ready":
                    want, timeout = int(args[0]), float(args[1])
                    await wait_until(
                        lambda want=want: (
                            len(node.gossip.mesh_peers(PROBE_TOPIC)) >= want
                            and node.dht.routing_table_size() > 0
                        ),
                        timeout,
                    )
                    say(
                        {
                            "mesh": len(node.gossip.mesh_peers(PROBE_TOPIC)),
                            "table": node.dht.routing_table_size(),
                            "peers": len(node.host.connected_peers()),
                        }
                    )
                elif cmd == "publish":
                    ident, size = int(args[0]), int(args[1])
                    data = struct.pack(">dq", time.time(), ident)
                    await node.gossip.publish(PROBE_TOPIC, data + bytes(max(0, size - 16)))
                    say({"ok": True})
                elif cmd == "report":
                    say({"probes": probes})
                elif cmd == "write":

                    def write(count: int) -> list[bytes]:
                        nonlocal written
                        writer = FeedWriter(author, registry.replica.registry)
                        out = []
                        for _ in range(count):
                            name = f"agent-{written}"
                            listing = validate_listing(
                                {"name": name, "kind": "agent", "title": name, "summary": "x",
                                 "price": written, "royalty_bps": 0}
                            )  # fmt: skip
                            signed = writer.put_listing(listing)
                            registry.replica.commit_own(signed, name)
                            out.append(signed.encode())
                            written += 1
                        return out

                    for data in await store.run(write, int(args[0])):
                        if "quiet" not in args[1:]:
                            await node.gossip.publish(REGISTRY_TOPIC, data)
                    say({"ok": True})
                elif cmd == "state":

                    def state() -> dict[str, Any]:
                        replica = registry.replica
                        feeds = replica.registry.feeds.values()
                        return {
                            "digest": sync_digest(replica.heads()).hex(),
                            "listings": sum(len(f.listing_names()) for f in feeds),
                        }

                    say(await store.run(state))
                elif cmd == "split":
                    seconds, others = float(args[0]), set(args[1:])
                    for peer in others:
                        await node.host.ban(peer, seconds)
                    await wait_until(lambda o=others: not o & set(node.host.connected_peers()), 10)
                    say({"ok": True, "connected": len(node.host.connected_peers())})
                elif cmd == "heal":
                    peers = [a.rsplit("/p2p/", 1)[1] for a in args]
                    await wait_until(lambda p=peers: not any(map(node.host.is_banned, p)), 60)
                    say({"ok": True, "failed": await dial_all(node, args)})
                elif cmd == "put":
                    owner = Keypair.generate()
                    with trio.move_on_after(30):
                        await node.dht.put(make_record(owner, "card", b"x" * 200, ttl_s=600))
                    say({"address": owner.address})
                elif cmd == "has":
                    say({"has": f"/mercato/{args[0]}/card" in _local_keys(node)})
                elif cmd == "get":
                    local = f"/mercato/{args[0]}/card" in _local_keys(node)
                    started = time.perf_counter()
                    found = None
                    with trio.move_on_after(10):
                        found = await node.dht.get(args[0], "card")
                    ms = (time.perf_counter() - started) * 1000
                    say({"ms": round(ms, 2), "found": found is not None, "local": local})
                elif cmd == "provide":
                    try:
                        with trio.fail_after(30):
                            await node.dht.provide(args[0])
                        say({"ok": True})
                    except Exception as exc:
                        say({"ok": False, "error": str(exc)[:200]})
                elif cmd == "find":
                    started = time.perf_counter()
                    providers: list[Any] = []
                    with trio.move_on_after(10):
                        providers = await node.dht.find_providers(args[0], 8)
                    ms = (time.perf_counter() - started) * 1000
                    say({"ms": round(ms, 2), "providers": len(providers)})
                elif cmd == "quit":
                    say({"ok": True})
                    nursery.cancel_scope.cancel()
                    break
                else:
                    say({"error": f"unknown command {cmd}"})
            nursery.cancel_scope.cancel()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    trio.run(main)
