"""task: the echo agent run on another node, round trip and throughput.

Two nodes in this process on loopback: a provider that holds the `echo`
example, released as a free agent, and a user. Each task goes over
/mercato/task/1.0.0, runs in one of the provider's 2 worker processes, and
its signed receipt is checked by the user's node, and the task is committed to
both nodes' task logs. The quote is fetched once and reused while it holds
(30 s), and the first tasks (the warm-up) are also run in the user's sandbox to
check the new provider. p50/p99 are of tasks one at a time; tasks_per_s is
with 8 tasks in flight (a peer's limit of requests at once to one node).
The paid figures are the same agent listed at a price, both nodes on one
embedded ledger: each task also signs and sends a new channel state, which the
provider checks against the ledger and stores before it runs.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from mercato.settlement import open_embedded_ledger

from ._nodes import running_nodes

ECHO = Path(__file__).resolve().parents[2] / "runtime" / "examples" / "echo" / "echo.wasm"
LISTING = {"name": "echo", "kind": "agent", "title": "Echo", "summary": "Echo.", "price": 0}


async def _run(root: Path) -> dict[str, Any]:
    async with (
        open_embedded_ledger(root / "ledger.db") as ledger,
        running_nodes(root, 2, ledger=ledger) as (provider, user),
    ):
        await user.overlay.host.connect(provider.overlay.host.listen_addrs()[0])
        shown = await provider.registry.publish("default", {**LISTING, "royalty_bps": 0})
        paid = {**LISTING, "name": "paid-echo", "price": 1000, "royalty_bps": 0}
        await provider.registry.publish("default", paid)
        cid = (await provider.builds.add_file(ECHO)).cid
        size = ECHO.stat().st_size
        for name in ("echo", "paid-echo"):
            await provider.registry.release(
                "default", {"name": name, "version": "1.0.0", "cid": cid, "size": size}
            )
        agent, peer = f"{shown['publisher']}/echo", provider.overlay.peer_id
        paid_agent = f"{shown['publisher']}/paid-echo"
        provider.tasks.serve_agents((agent, paid_agent))
        with trio.fail_after(30):  # the user's registry has the release: receipts are checked
            for _ in iter(int, 1):
                known = [
                    await user.registry.show(shown["publisher"], n) for n in ("echo", "paid-echo")
                ]
                if all((k or {}).get("releases") for k in known):
                    break
                await trio.sleep(0.05)
        # Warm: workers started and the module compiled; for paid, the channel opened.
        times, rate = await _measure(user, agent, peer, warm=20, one_by_one=300, parallel=1600)
        paid_times, paid_rate = await _measure(
            user, paid_agent, peer, warm=5, one_by_one=200, parallel=800
        )
    return {
        "p50_ms": round(statistics.median(times) * 1000, 2),
        "p99_ms": round(times[int(0.99 * len(times))] * 1000, 2),
        "tasks_per_s": round(rate),
        "paid_p50_ms": round(statistics.median(paid_times) * 1000, 2),
        "paid_tasks_per_s": round(paid_rate),
        "targets": {"p50_ms": 30, "tasks_per_s": 150},
    }


async def _measure(
    user: Any, agent: str, peer: str, warm: int, one_by_one: int, parallel: int
) -> tuple[list[float], float]:
    """Round trips of tasks one at a time (sorted), then tasks per second with 8 in flight."""
    for _ in range(warm):
        await user.tasks.run_task(agent, "*", b"warm", peer)
    times = []
    for _ in range(one_by_one):
        started = time.perf_counter()
        await user.tasks.run_task(agent, "*", b"hello", peer)
        times.append(time.perf_counter() - started)
    started = time.perf_counter()

    async def caller(n: int) -> None:
        for _ in range(n):
            await user.tasks.run_task(agent, "*", b"hello", peer)

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(caller, parallel // 8)
    return sorted(times), parallel / (time.perf_counter() - started)


def run() -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="mercato-task-"))
    try:
        return trio.run(_run, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
