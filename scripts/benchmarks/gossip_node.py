"""One benchmark node in its own process, driven by line commands on stdin.

Commands (one per line): ``connect ADDR``, ``subscribe``, ``mesh`` (prints the
mesh size), ``publish N RATE SIZE`` (publishes N messages at RATE/s, each
starting with its send time), ``report`` (prints every latency seen, in ms),
``stats`` (connections, mesh, GRAFT/PRUNE/IHAVE/IWANT counts since start,
heartbeat and process CPU seconds), ``quit``. Answers are one JSON line each on
stdout.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import time

import trio

from mercato.p2p import DiscoveryConfig, HostConfig, Keypair, OverlayConfig, open_overlay

from ._net import lines

TOPIC = "mercato/bench/1"
CONFIG = OverlayConfig(
    host=HostConfig(listen=("/ip4/127.0.0.1/tcp/0",)),
    discovery=DiscoveryConfig(mdns=False),
)


class Counters:
    """What the router did since the node started, counted by wrapping its methods
    (py-libp2p keeps no such counts): for telling mesh churn and gossip apart."""

    def __init__(self, router) -> None:
        self.counts = dict.fromkeys(
            ("graft_out", "prune_out", "ihave_out", "graft_in", "prune_in", "ihave_in", "iwant_in"),
            0,
        )
        self.heartbeat_s = 0.0
        counts = self.counts
        emit = router.emit_control_message

        async def emit_control_message(control, peer):
            counts["graft_out"] += len(control.graft)
            counts["prune_out"] += len(control.prune)
            counts["ihave_out"] += len(control.ihave)
            await emit(control, peer)

        router.emit_control_message = emit_control_message
        for name in ("emit_graft", "emit_prune"):
            self._count_direct(router, name)
        for name in ("graft", "prune", "ihave", "iwant"):
            self._count_in(router, name)
        for name in ("mesh_heartbeat", "gossip_heartbeat"):
            self._time(router, name)

    def _count_direct(self, router, name: str) -> None:
        """join() and the score-based peer replacement call these directly (the
        heartbeat's own GRAFTs and PRUNEs do not)."""
        emit = getattr(router, name)
        counts = self.counts
        counts[f"{name}_direct"] = 0

        async def counted(*args):
            counts[f"{name}_direct"] += 1
            await emit(*args)

        setattr(router, name, counted)

    def _count_in(self, router, name: str) -> None:
        handle = getattr(router, f"handle_{name}")
        counts = self.counts

        async def counted(msg, peer):
            counts[f"{name}_in"] += 1
            await handle(msg, peer)

        setattr(router, f"handle_{name}", counted)

    def _time(self, router, name: str) -> None:
        fn = getattr(router, name)

        def timed():
            started = time.process_time()
            try:
                return fn()
            finally:
                self.heartbeat_s += time.process_time() - started

        setattr(router, name, timed)


def say(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main() -> None:
    import logging

    logging.getLogger("libp2p").disabled = True
    latencies: list[float] = []
    sent_at: list[float] = []
    received = 0

    async def handler(message) -> None:
        nonlocal received
        received += 1
        (sent,) = struct.unpack(">d", message.data[:8])
        latencies.append((time.time() - sent) * 1000)
        sent_at.append(sent)

    async with open_overlay(Keypair.generate(), CONFIG) as node:
        counters = Counters(node.gossip._router)
        say({"addr": node.host.listen_addrs()[0], "peer": node.peer_id})
        stdin = trio.lowlevel.FdStream(os.dup(0))
        async for line in lines(stdin):
            cmd, *args = line.split()
            if cmd == "connect":
                await node.host.connect(args[0])
                say({"ok": True})
            elif cmd == "subscribe":
                await node.gossip.subscribe(TOPIC, handler)
                say({"ok": True})
            elif cmd == "mesh":
                say({"mesh": len(node.gossip.mesh_peers(TOPIC))})
            elif cmd == "publish":
                count, rate, size = int(args[0]), float(args[1]), int(args[2])
                start = time.perf_counter()
                for i in range(count):
                    payload = struct.pack(">d", time.time()) + bytes(size - 8)
                    await node.gossip.publish(TOPIC, payload)
                    ahead = start + (i + 1) / rate - time.perf_counter()
                    await trio.sleep(max(0.0, ahead))
                say({"ok": True, "seconds": time.perf_counter() - start})
            elif cmd == "stats":
                say(
                    {
                        "connections": len(node.host.connected_peers()),
                        "mesh": len(node.gossip.mesh_peers(TOPIC)),
                        "topic_peers": len(node.gossip.topic_peers(TOPIC)),
                        **counters.counts,
                        "heartbeat_cpu_s": counters.heartbeat_s,
                        "graft_flood_penalised": len(node.gossip.graft_flood_penalties()),
                        "cpu_s": time.process_time(),
                    }
                )
            elif cmd == "report":
                say({"received": received, "latencies": latencies, "sent_at": sent_at})
            elif cmd == "quit":
                say({"ok": True})
                return


if __name__ == "__main__":
    trio.run(main)
