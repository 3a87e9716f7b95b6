"""subcall: what a composite agent's sub-call adds, against calling the agent directly.

Three nodes in this process on loopback: a callee serving the free `echo`
example, a runner serving a composite agent (a small module that calls echo once
through ``mercato.call`` with its input and writes the answer), and a user. The
direct figure is the user running echo on the callee; the composite one the
user running the composite agent on the runner, which runs it in its sandbox,
runs echo on the callee as a sub-task (quote reused, receipt checked) and signs
a receipt that lists the sub-receipt, which the user's node checks.
``subcall_overhead_p50_ms`` is the difference of the two medians (target < 15).
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from wasmtime import wat2wasm

from ._nodes import running_nodes

ECHO = Path(__file__).resolve().parents[2] / "runtime" / "examples" / "echo" / "echo.wasm"
LISTING = {"kind": "agent", "title": "Bench", "summary": "Bench.", "price": 0, "royalty_bps": 0}
# Reads its input (up to 60 KiB), calls "echo" with it, writes what came back.
RELAY = """
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "mercato" "call" (func $call (param i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 64) "echo")
  (func (export "_start")
    (local $n i32) (local $r i32)
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 61440))
    (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16)))
    (local.set $n (i32.load (i32.const 16)))
    (local.set $r (call $call (i32.const 64) (i32.const 4) (i32.const 1024) (local.get $n)
                              (i32.const 65536) (i32.const 61440)))
    (if (i32.lt_s (local.get $r) (i32.const 0)) (then unreachable))
    (i32.store (i32.const 0) (i32.const 65536))
    (i32.store (i32.const 4) (local.get $r))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))))
"""


async def _release(node: Any, name: str, path: Path, deps: dict[str, str]) -> str:
    shown = await node.registry.publish("default", {**LISTING, "name": name})
    info = await node.builds.add_file(path)
    release = {"name": name, "version": "1.0.0", "cid": info.cid, "size": info.size,
               "dependencies": deps}  # fmt: skip
    await node.registry.release("default", release)
    return f"{shown['publisher']}/{name}"


async def _run(root: Path) -> dict[str, Any]:
    async with running_nodes(root, 3) as (callee, runner, user):
        for a, b in ((callee, runner), (callee, user), (runner, user)):
            await a.overlay.host.connect(b.overlay.host.listen_addrs()[0])
        echo = await _release(callee, "echo", ECHO, {})
        relay_path = root / "relay.wasm"
        relay_path.write_bytes(wat2wasm(RELAY))
        relay = await _release(runner, "relay", relay_path, {echo: "*"})
        callee.tasks.serve_agents((echo,))
        runner.tasks.serve_agents((relay,))
        with trio.fail_after(60):  # each node knows the releases and the cards
            while not await _ready(runner, user, echo, relay):  # noqa: ASYNC110 (no event)
                await trio.sleep(0.05)
        direct = await _times(user, echo, callee.overlay.peer_id)
        composite = await _times(user, relay, runner.overlay.peer_id)
    direct_p50, composite_p50 = statistics.median(direct), statistics.median(composite)
    return {
        "direct_p50_ms": round(direct_p50 * 1000, 2),
        "composite_p50_ms": round(composite_p50 * 1000, 2),
        "composite_p99_ms": round(composite[int(0.99 * len(composite))] * 1000, 2),
        "subcall_overhead_p50_ms": round((composite_p50 - direct_p50) * 1000, 2),
        "targets": {"subcall_overhead_p50_ms": 15},
    }


async def _ready(runner: Any, user: Any, echo: str, relay: str) -> bool:
    if not (user.tasks.providers(echo) and user.tasks.providers(relay)):
        return False
    if not runner.tasks.providers(echo):
        return False
    for node in (runner, user):
        for agent in (echo, relay):
            publisher, _, name = agent.partition("/")
            if not ((await node.registry.show(publisher, name)) or {}).get("releases"):
                return False
    return True


async def _times(user: Any, agent: str, peer: str, warm: int = 20, n: int = 300) -> list[float]:
    """Round trips of ``n`` tasks one at a time, after ``warm`` (sorted)."""
    for _ in range(warm):
        done = await user.tasks.run_task(agent, "*", b"warm", peer)
        assert done["output"] == b"warm", done["output"]
    times = []
    for _ in range(n):
        started = time.perf_counter()
        await user.tasks.run_task(agent, "*", b"hello", peer)
        times.append(time.perf_counter() - started)
    return sorted(times)


def run() -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="mercato-subcall-"))
    try:
        return trio.run(_run, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
