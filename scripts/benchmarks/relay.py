"""relay: a task's round trip through a relay versus direct, and how many relayed
connections one relay holds.

Round trips: the echo agent, free, run one task at a time (the quote reused, the
receipt checked) between two whole nodes in this process: once connected
directly, once both ``private`` (listening on no socket at all) and reaching
each other only through a third node in the relay role. ``relayed_p50_ms``,
``direct_p50_ms`` and their ratio.

Capacity: one relay overlay and ``CLIENTS`` private overlays, each holding a
reservation; one dialer opens a circuit to every one of them, and each circuit
answers a ping. ``relayed_connections`` is how many were open and answering at
once (all of them unless the relay failed some), with the ping p50 across them.
Everything shares this process's 2 cores with the relay, so the relay's own
ceiling is higher than this.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio

from mercato.node import Config, DataDir, Node, init_data_dir
from mercato.p2p import (
    DiscoveryConfig,
    HostConfig,
    Keypair,
    OverlayConfig,
    RelayConfig,
    open_overlay,
)

ECHO = Path(__file__).resolve().parents[2] / "runtime" / "examples" / "echo" / "echo.wasm"
LISTING = {"name": "echo", "kind": "agent", "title": "Echo", "summary": "Echo.", "price": 0}
LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)
TASKS = 200
CLIENTS = 200


def _config(**p2p: Any) -> Config:
    return Config().replace("api", port=0).replace("p2p", mdns=False, target_peers=4, **p2p)


async def _node(stack: AsyncExitStack, nursery: trio.Nursery, root: Path, cfg: Config) -> Node:
    datadir = DataDir(root)
    await trio.to_thread.run_sync(init_data_dir, datadir)
    node = Node(datadir, cfg)
    await nursery.start(node.run)
    stack.callback(node.request_stop)
    return node


async def _wait(condition: Any, within: float) -> None:
    with trio.fail_after(within):
        for _ in iter(int, 1):
            if await condition():
                return
            await trio.sleep(0.05)


async def _round_trips(provider: Node, user: Node) -> list[float]:
    shown = await provider.registry.publish("default", {**LISTING, "royalty_bps": 0})
    cid = (await provider.builds.add_file(ECHO)).cid
    release = {"name": "echo", "version": "1.0.0", "cid": cid, "size": ECHO.stat().st_size}
    await provider.registry.release("default", release)
    agent, peer = f"{shown['publisher']}/echo", provider.overlay.peer_id
    provider.tasks.serve_agents((agent,))

    async def known() -> bool:
        listed = await user.registry.show(shown["publisher"], "echo")
        return bool(listed and listed["releases"])

    await _wait(known, 30)
    for _ in range(20):  # warm: workers, compiled module, second opinions
        await user.tasks.run_task(agent, "*", b"hello", peer)
    times = []
    for _ in range(TASKS):
        started = time.perf_counter()
        await user.tasks.run_task(agent, "*", b"hello", peer)
        times.append(time.perf_counter() - started)
    return times


async def _tasks(root: Path) -> tuple[list[float], list[float]]:
    async with AsyncExitStack() as stack:
        nursery = await stack.enter_async_context(trio.open_nursery())
        provider = await _node(stack, nursery, root / "d-provider", _config(listen=LOOPBACK))
        user = await _node(stack, nursery, root / "d-user", _config(listen=LOOPBACK))
        await user.overlay.host.connect(provider.overlay.host.listen_addrs()[0])
        direct = await _round_trips(provider, user)
        nursery.cancel_scope.cancel()
    async with AsyncExitStack() as stack:
        nursery = await stack.enter_async_context(trio.open_nursery())
        relay_cfg = _config(listen=LOOPBACK).replace("node", role="relay")
        relay = await _node(stack, nursery, root / "r-relay", relay_cfg)
        there = relay.overlay.host.listen_addrs()[0]
        hidden = _config(listen=(), private=True, bootstrap=(there,))
        provider = await _node(stack, nursery, root / "r-provider", hidden)
        user = await _node(stack, nursery, root / "r-user", hidden)

        async def reserved() -> bool:
            return all(n.overlay.relay.relayed_addrs() for n in (provider, user))

        await _wait(reserved, 30)
        await user.overlay.host.connect(provider.overlay.host.listen_addrs()[0])
        relayed = await _round_trips(provider, user)
        nursery.cancel_scope.cancel()
    return direct, relayed


async def _capacity() -> tuple[int, float]:
    async with AsyncExitStack() as stack:
        relay_cfg = OverlayConfig(
            host=HostConfig(listen=LOOPBACK, max_connections=4 * CLIENTS),
            discovery=DiscoveryConfig(mdns=False),
            relay=RelayConfig(hop=True, max_reservations=2 * CLIENTS),
        )
        relay = await stack.enter_async_context(open_overlay(Keypair.generate(), relay_cfg))
        there = relay.host.listen_addrs()[0]
        hidden = OverlayConfig(
            host=HostConfig(listen=(), private=True),
            discovery=DiscoveryConfig(mdns=False),
            relay=RelayConfig(reserve_on=(there,)),
        )
        clients = []
        for _ in range(CLIENTS):
            clients.append(
                await stack.enter_async_context(open_overlay(Keypair.generate(), hidden))
            )
        with trio.fail_after(120):
            while not all(c.relay.relayed_addrs() for c in clients):  # noqa: ASYNC110
                await trio.sleep(0.1)
        dialer_cfg = OverlayConfig(
            host=HostConfig(listen=(), max_connections=4 * CLIENTS),
            discovery=DiscoveryConfig(mdns=False),
        )
        dialer = await stack.enter_async_context(open_overlay(Keypair.generate(), dialer_cfg))
        for client in clients:
            await dialer.host.connect(client.host.listen_addrs()[0])
        pings = []
        alive = 0
        for client in clients:
            try:
                pings += await dialer.host.ping(client.peer_id, count=3)
                alive += 1
            except Exception:
                pass
        return alive, statistics.median(pings) if pings else float("nan")  # already ms


async def _run(root: Path) -> dict[str, Any]:
    direct, relayed = await _tasks(root)
    alive, ping_ms = await _capacity()
    direct_p50 = statistics.median(direct) * 1000
    relayed_p50 = statistics.median(relayed) * 1000
    return {
        "relayed_p50_ms": round(relayed_p50, 2),
        "direct_p50_ms": round(direct_p50, 2),
        "ratio": round(relayed_p50 / direct_p50, 2),
        "relayed_connections": alive,
        "of_clients": CLIENTS,
        "circuit_ping_p50_ms": round(ping_ms, 2),
    }


def run() -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="mercato-relay-"))
    try:
        return trio.run(_run, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
