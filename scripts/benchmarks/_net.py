"""Many overlays in one trio process on loopback, for benchmarks."""

from __future__ import annotations

import logging
import random
import statistics
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import trio

from mercato.p2p import DiscoveryConfig, HostConfig, Keypair, Overlay, OverlayConfig, open_overlay

CONFIG = OverlayConfig(
    host=HostConfig(listen=("/ip4/127.0.0.1/tcp/0",)),
    discovery=DiscoveryConfig(mdns=False),
)


def quiet() -> None:
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    logging.getLogger("libp2p").propagate = False


@asynccontextmanager
async def network(n: int, extra_links: int = 3, seed: int = 7) -> AsyncIterator[list[Overlay]]:
    """``n`` overlays: each dials the first (bootstrap) and ``extra_links`` random earlier ones."""
    rng = random.Random(seed)
    async with AsyncExitStack() as stack:
        nodes = []
        for _ in range(n):
            nodes.append(await stack.enter_async_context(open_overlay(Keypair.generate(), CONFIG)))
        quiet()
        for i, node in enumerate(nodes[1:], start=1):
            await node.host.connect(nodes[0].host.listen_addrs()[0])
            for j in rng.sample(range(1, i), min(extra_links, i - 1)):
                await node.host.connect(nodes[j].host.listen_addrs()[0])
        yield nodes


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def lines(stream: trio.lowlevel.FdStream) -> AsyncIterator[str]:
    """The lines a child process is sent on ``stream`` (its stdin), stripped."""
    buffer = b""
    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line.decode().strip()
