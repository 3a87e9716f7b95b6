"""Gossip benchmark: a 20-node network of separate processes on loopback.

Each node is its own process (scripts/benchmarks/gossip_node.py), as in a real
network: in one process, twenty nodes share one core and the figure measures
the simulation. Nodes join through the first and three random others. Messages
carry their send time (the machine's one clock), so latency is measured where
they arrive.

Latency is measured in steady state, as a user of a running network sees it:
after the joins (DHT join lookups, the dials of discovery, mesh formation) have
settled, i.e. once for `QUIET_S` no node's connections changed and no node sent
a GRAFT or PRUNE. The start-up is reported apart (``settle_s``), with the
connections and mesh of each node and the churn during the measurement (which a
settled network keeps near zero).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ._net import median, percentile

NODES = 20
RATE = 10.0
MESSAGES = 100
SIZE = 1024
HOP_RATES = (500.0, 1000.0, 1500.0, 2000.0)
QUIET_S = 5.0
"""How long a network must be still (connections, GRAFT/PRUNE) to count as settled."""
SETTLE_TIMEOUT_S = 120.0
HERE = Path(__file__).resolve().parent


class Child:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.gossip_node"],
            cwd=HERE.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        hello = self.read()
        self.addr, self.peer = hello["addr"], hello["peer"]

    def read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("benchmark node exited")
        return json.loads(line)

    def ask(self, command: str) -> dict[str, Any]:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        try:
            self.ask("quit")
            self.proc.wait(timeout=20)
        except Exception:
            self.proc.kill()
            self.proc.wait()


def _start(n: int, links: int = 3) -> list[Child]:
    children = [Child() for _ in range(n)]
    rng = random.Random(7)
    for i, child in enumerate(children[1:], start=1):
        child.ask(f"connect {children[0].addr}")
        for j in rng.sample(range(1, i), min(links, i - 1)):
            child.ask(f"connect {children[j].addr}")
    for child in children:
        child.ask("subscribe")
    deadline = time.monotonic() + 30
    while any(c.ask("mesh")["mesh"] < min(2, n - 1) for c in children):
        if time.monotonic() > deadline:
            raise RuntimeError("mesh did not form")
        time.sleep(0.1)
    return children


def _churn(stats: list[dict[str, Any]]) -> int:
    return sum(s["graft_out"] + s["prune_out"] for s in stats)


def _settle(children: list[Child]) -> list[dict[str, Any]]:
    """Wait until no node's connections changed and no node sent a GRAFT or PRUNE
    for `QUIET_S`; return every node's statistics at that point."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    stats = [c.ask("stats") for c in children]
    still_since = time.monotonic()
    while time.monotonic() - still_since < QUIET_S:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the network did not settle in {SETTLE_TIMEOUT_S:.0f} s")
        time.sleep(0.5)
        now = [c.ask("stats") for c in children]
        moved = [s["connections"] for s in now] != [s["connections"] for s in stats]
        if moved or _churn(now) != _churn(stats):
            still_since = time.monotonic()
        stats = now
    return stats


def _spread(values: list[int]) -> dict[str, float]:
    return {"min": min(values), "median": median(values), "max": max(values)}


def _network() -> dict[str, Any]:
    started = time.monotonic()
    children = _start(NODES)
    try:
        before = _settle(children)
        settle_s = time.monotonic() - started
        rng = random.Random(1)
        for _ in range(MESSAGES):
            rng.choice(children).ask(f"publish 1 1000 {SIZE}")
            time.sleep(1 / RATE)
        expected = MESSAGES * (NODES - 1)
        deadline = time.monotonic() + 10
        while True:
            reports = [c.ask("report") for c in children]
            received = sum(r["received"] for r in reports)
            if received >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        latencies = [x for r in reports for x in r["latencies"]]
        after = [c.ask("stats") for c in children]
    finally:
        for child in children:
            child.close()
    cpu_s = sum(a["cpu_s"] - b["cpu_s"] for a, b in zip(after, before, strict=True))
    return {
        "nodes": NODES,
        "rate_per_s": RATE,
        "messages": MESSAGES,
        "p50_ms": round(median(latencies), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "delivered_ratio": round(received / expected, 4),
        "settle_s": round(settle_s, 1),
        "connections_per_node": _spread([a["connections"] for a in after]),
        "mesh_per_node": _spread([a["mesh"] for a in after]),
        "grafts_prunes_during": _churn(after) - _churn(before),
        "cpu_ms_per_message": round(cpu_s * 1000 / MESSAGES, 1),
    }


def _hop_at(rate: float) -> dict[str, Any]:
    """Offer 1 KB messages at ``rate`` for three seconds over one hop."""
    count = int(rate * 3)
    a, b = _start(2)
    try:
        _settle([a, b])
        a.ask(f"publish {count} {rate} {SIZE}")
        deadline = time.monotonic() + 20
        while True:
            report = b.ask("report")
            if report["received"] >= count or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        a.close()
        b.close()
    return {
        "rate": rate,
        "sent": count,
        "delivered": report["received"],
        "p50_ms": round(median(report["latencies"]), 2),
    }


def _one_hop() -> dict[str, Any]:
    """The highest offered rate that one hop carries with nothing lost and no queue
    building up (median delay under 50 ms)."""
    runs = [_hop_at(rate) for rate in HOP_RATES]
    kept = [r for r in runs if r["delivered"] == r["sent"] and r["p50_ms"] < 50]
    return {"msgs_per_s": max((r["rate"] for r in kept), default=0.0), "hop_runs": runs}


def run() -> dict[str, Any]:
    result = _network()
    result.update(_one_hop())
    result["targets"] = {"p50_ms": 100, "p99_ms": 500, "delivered_ratio": 1.0, "msgs_per_s": 1000}
    return result
