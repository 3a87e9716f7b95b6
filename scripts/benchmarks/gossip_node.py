"""One benchmark node in its own process, driven by line commands on stdin.

Commands (one per line): ``connect ADDR``, ``subscribe``, ``mesh`` (prints the
mesh size), ``publish N RATE SIZE`` (publishes N messages at RATE/s, each
starting with its send time), ``report`` (prints every latency seen, in ms),
``quit``. Answers are one JSON line each on stdout.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import time

import trio

from mercato.p2p import DiscoveryConfig, HostConfig, Keypair, OverlayConfig, open_overlay

TOPIC = "mercato/bench/1"
CONFIG = OverlayConfig(
    host=HostConfig(listen=("/ip4/127.0.0.1/tcp/0",)),
    discovery=DiscoveryConfig(mdns=False),
)


def say(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def lines(stream: trio.lowlevel.FdStream):
    buffer = b""
    while True:
        chunk = await stream.receive_some(4096)
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line.decode().strip()


async def main() -> None:
    import logging

    logging.getLogger("libp2p").disabled = True
    latencies: list[float] = []
    received = 0

    async def handler(message) -> None:
        nonlocal received
        received += 1
        (sent,) = struct.unpack(">d", message.data[:8])
        latencies.append((time.time() - sent) * 1000)

    async with open_overlay(Keypair.generate(), CONFIG) as node:
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
            elif cmd == "report":
                say({"received": received, "latencies": latencies})
            elif cmd == "quit":
                say({"ok": True})
                return


if __name__ == "__main__":
    trio.run(main)
