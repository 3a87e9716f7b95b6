"""commerce: buying a licence on the localnet, and what checking it adds to a task.

A real `mercato localnet` process (a fresh ledger in a temp dir) and two nodes in
this process that reach it over JSON-RPC, as separate daemons do: a creator
that also serves its agent (the `echo` example), and a user. The agent is listed
twice, free per run: `echo` without plans, and `echo-pro` sold by a licence plan.

- ``purchase_p50_ms``/``purchase_p99_ms``: `CommerceService.buy`, one at a time,
  from the call to the licence recorded: the offer from the creator's node, the
  buyer's transaction, the creator's checks, its simulation and co-signature,
  and the localnet confirming it (the ledger's slots are 400 ms apart; a
  transaction is confirmed as soon as it is executed, as on a validator);
- ``licence_check_overhead_ms``: the p50 round trip of a task of `echo-pro`
  minus that of `echo`, tasks interleaved one at a time (both providers' answers
  cached, as in steady use: the quote is reused, the licence's check is cached);
- ``licence_check_cached_us``: the provider's cached check by itself, per call;
- ``licence_check_cold_ms``: the same check uncached (two account reads over
  JSON-RPC and the token's checks).
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from mercato.node.commerce import LicenceUse
from mercato.settlement import RpcLedger

from ._nodes import running_nodes

ECHO = Path(__file__).resolve().parents[2] / "runtime" / "examples" / "echo" / "echo.wasm"
LISTING = {"kind": "agent", "title": "Echo", "summary": "Echo.", "price": 0, "royalty_bps": 0}
PLAN = {"kind": "licence", "price": 1_000_000, "versions": "^1", "run_price": 0}
PURCHASES = 40
TASKS = 300


def _start_localnet(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    url_file = root / "localnet" / "url"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mercato.cli", "localnet", "--dir", str(root / "localnet"),
         "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not url_file.exists() or not url_file.read_text().strip():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the localnet did not start")
        time.sleep(0.05)
    return proc, url_file.read_text().strip()


async def _wait(condition: Any, what: str) -> None:
    """Poll ``condition`` (nothing to wait on: cards, registries, DHT records)."""
    with trio.fail_after(60):
        for _ in iter(int, 1):
            if await condition():
                return
            await trio.sleep(0.05)


async def _run(root: Path, url: str) -> dict[str, Any]:
    ledger = RpcLedger(url, "localnet", faucet=True)
    try:
        async with running_nodes(root, 2, ledger=ledger) as (creator, user):
            await user.overlay.host.connect(creator.overlay.host.listen_addrs()[0])
            publisher = (await creator.registry.publish("default", {**LISTING, "name": "echo"}))[
                "publisher"
            ]
            pro = {**LISTING, "name": "echo-pro", "plans": {"pro": PLAN}}
            await creator.registry.publish("default", pro)
            cid = (await creator.builds.add_file(ECHO)).cid
            for name in ("echo", "echo-pro"):
                release = {
                    "name": name,
                    "version": "1.0.0",
                    "cid": cid,
                    "size": ECHO.stat().st_size,
                }
                await creator.registry.release("default", release)
            free, sold = f"{publisher}/echo", f"{publisher}/echo-pro"
            creator.tasks.serve_agents((free, sold))

            async def ready() -> bool:
                known = [await user.registry.show(publisher, n) for n in ("echo", "echo-pro")]
                sellers = await user.overlay.dht.find_providers(f"seller:{publisher}")
                return all((k or {}).get("releases") for k in known) and bool(sellers)

            await _wait(ready, "the releases and the seller")
            for _ in range(3):  # warm: connections, the seller found, the ledger's caches
                await user.commerce.buy(sold, "pro")
            bought = []
            for _ in range(PURCHASES):
                started = time.perf_counter()
                await user.commerce.buy(sold, "pro")
                bought.append(time.perf_counter() - started)
            peer = creator.overlay.peer_id
            for agent in (free, sold) * 10:  # warm: workers, module, quotes, cached checks
                await user.tasks.run_task(agent, "*", b"warm", peer)
            rounds: dict[str, list[float]] = {free: [], sold: []}
            for _ in range(TASKS):
                for agent in (free, sold):
                    started = time.perf_counter()
                    await user.tasks.run_task(agent, "*", b"hello", peer)
                    rounds[agent].append(time.perf_counter() - started)
            cached_us, cold_ms = await _check_costs(creator, user, sold)
    finally:
        await ledger.aclose()
    bought.sort()
    return {
        "purchase_p50_ms": round(statistics.median(bought) * 1000, 1),
        "purchase_p99_ms": round(bought[int(0.99 * (len(bought) - 1))] * 1000, 1),
        "task_p50_ms": round(statistics.median(rounds[free]) * 1000, 2),
        "licensed_task_p50_ms": round(statistics.median(rounds[sold]) * 1000, 2),
        "licence_check_overhead_ms": round(
            (statistics.median(rounds[sold]) - statistics.median(rounds[free])) * 1000, 2
        ),
        "licence_check_cached_us": round(cached_us, 1),
        "licence_check_cold_ms": round(cold_ms, 2),
        "purchases": PURCHASES,
        "tasks": TASKS,
        "targets": {"purchase_p50_ms": 100, "licence_check_overhead_ms": 1},
    }


async def _check_costs(creator: Any, user: Any, agent: str) -> tuple[float, float]:
    """The provider's check, cached (µs per call) and cold (ms per call)."""
    publisher, _, name = agent.partition("/")
    listing = await creator.registry.show(publisher, name)
    (held, *_) = await user.commerce.held.usable(agent)
    wallet = user.settlement.wallet
    use = LicenceUse(
        held.mint, str(wallet.pubkey()), creator.overlay.peer_id, user.overlay.peer_id
    ).sign(wallet)
    checks = creator.commerce.entitlements
    await checks.check(listing, use, user.overlay.peer_id)
    n = 10_000
    started = time.perf_counter()
    for _ in range(n):
        await checks.check(listing, use, user.overlay.peer_id)
    cached = (time.perf_counter() - started) / n * 1e6
    colds = []
    for _ in range(50):
        checks.forget(held.mint)
        started = time.perf_counter()
        await checks.check(listing, use, user.overlay.peer_id)
        colds.append(time.perf_counter() - started)
    return cached, statistics.median(colds) * 1000


def run() -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="mercato-commerce-"))
    proc, url = _start_localnet(root)
    try:
        return trio.run(_run, root, url)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)
