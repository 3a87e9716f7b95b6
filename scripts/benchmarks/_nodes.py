"""Whole nodes (`node.Node`) in the benchmark's own process, on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from mercato.node import Config, DataDir, Node, init_data_dir

LOOPBACK = (
    Config()
    .replace("api", port=0)
    .replace("p2p", listen=("/ip4/127.0.0.1/tcp/0",), mdns=False, target_peers=0)
)


@asynccontextmanager
async def running_nodes(
    root: Path, n: int, config: Config = LOOPBACK, ledger: object | None = None
) -> AsyncIterator[list[Node]]:
    """``n`` running nodes with their own data dirs under ``root``; stopped on exit.
    A ``ledger`` given is shared by all (one embedded ledger in this process)."""
    async with trio.open_nursery() as nursery:
        nodes = []
        for i in range(n):
            datadir = DataDir(root / f"n{i}")
            await trio.to_thread.run_sync(init_data_dir, datadir)
            node = Node(datadir, config, ledger=ledger)  # type: ignore[arg-type]
            await nursery.start(node.run)
            nodes.append(node)
        try:
            yield nodes
        finally:
            for node in nodes:
                node.request_stop()
