"""repair: seconds from losing one responsible peer to R copies again, in 10 nodes.

10 nodes (`node.Node`) in this process on loopback, every pair connected, with
[builds] replicas = 3 and the default repair interval (10 s). A 10 MB build is
released by a node outside the 4 closest to it (so the 4th closest has no copy
yet) and lands on the 3 closest; then one of those stops. The figure is the
time until the next closest peer holds a complete, verified copy.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from mercato.node import Node
from mercato.node.builds._service import responsible
from mercato.node.builds._store import manifest_of

from ._nodes import LOOPBACK, running_nodes

NODES = 10
WORDCOUNT = (
    Path(__file__).resolve().parents[2] / "runtime" / "examples" / "wordcount" / "wordcount.wasm"
)
SIZE = 10 * 1024 * 1024


async def _held(nodes: list[Node], cid: str) -> set[str]:
    out = set()
    for node in nodes:
        info = await node.store.run(node.builds.builds.info, cid)
        if info is not None and info.complete:
            out.add(node.overlay.peer_id)
    return out


async def _until_held(nodes: list[Node], cid: str, peers: set[str]) -> None:
    held = await _held(nodes, cid)
    while not peers <= held:
        await trio.sleep(0.05)
        held = await _held(nodes, cid)


async def _run(root: Path) -> dict[str, Any]:
    source = root / "build.wasm"
    source.write_bytes(_padded_wordcount(SIZE))
    cid = manifest_of(source).cid
    async with running_nodes(root, NODES) as nodes:
        for i, a in enumerate(nodes):
            for b in nodes[i + 1 :]:
                await a.overlay.host.connect(b.overlay.host.listen_addrs()[0])
        # A creator outside the 4 closest, so that the repair is a real fetch.
        closest = responsible(cid, [n.overlay.peer_id for n in nodes], 4)
        creator = next(n for n in nodes if n.overlay.peer_id not in closest)
        listing = {"name": "bench", "kind": "agent", "title": "Bench", "summary": "x."}
        await creator.registry.publish("default", {**listing, "price": 0, "royalty_bps": 0})
        await creator.api.registry.release("default", {"name": "bench", "version": "1.0.0"}, source)
        duty = responsible(cid, [n.overlay.peer_id for n in nodes], 3)
        with trio.fail_after(120):
            await _until_held(nodes, cid, set(duty))
        lost = next(n for n in nodes if n.overlay.peer_id in duty and n is not creator)
        started = time.perf_counter()
        lost.request_stop()
        alive = [n for n in nodes if n is not lost]
        new_duty = responsible(cid, [n.overlay.peer_id for n in alive], 3)
        assert not set(new_duty) - set(duty) <= await _held(alive, cid), "no repair to do"
        with trio.fail_after(120):
            await _until_held(alive, cid, set(new_duty))
        repair_s = time.perf_counter() - started
    return {
        "nodes": NODES,
        "build_bytes": SIZE,
        "replicas": 3,
        "repair_interval_s": LOOPBACK.builds.repair_interval_s,
        "repair_s": round(repair_s, 2),
    }


def run() -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="mercato-repair-"))
    try:
        return trio.run(_run, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _padded_wordcount(size: int) -> bytes:
    """The wordcount example grown to ``size`` bytes by a custom section of random
    bytes: a release checks that its build compiles, so a big build must be real."""
    module = WORDCOUNT.read_bytes()
    name = b"padding"
    payload = os.urandom(max(0, size - len(module) - 16))
    body = _leb128(len(name)) + name + payload
    return module + b"\x00" + _leb128(len(body)) + body


def _leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)
