"""Gossip benchmark: a 20-node network of separate processes on loopback.

Each node is its own process (scripts/benchmarks/gossip_node.py), as in a real
network: in one process, twenty nodes share one core and the figure measures
the simulation. Nodes join through the first and three random others. Messages
carry their send time (the machine's one clock), so latency is measured where
they arrive.
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


def _network() -> dict[str, Any]:
    children = _start(NODES)
    try:
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
    finally:
        for child in children:
            child.close()
    return {
        "nodes": NODES,
        "rate_per_s": RATE,
        "messages": MESSAGES,
        "p50_ms": round(median(latencies), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "delivered_ratio": round(received / expected, 4),
    }


def _hop_at(rate: float) -> dict[str, Any]:
    """Offer 1 KB messages at ``rate`` for three seconds over one hop."""
    count = int(rate * 3)
    a, b = _start(2)
    try:
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
