"""Benchmarks. ``python scripts/bench.py <name>`` prints one JSON object with the figures.

Benchmarks:
  startup   seconds from `mercato node start` to the control API answering
            (target < 1.5 s) and the idle daemon's resident memory (target < 120 MB)
  gossip    20 overlays in one process on loopback: 1 KB messages at 10/s from
            random nodes, latency to every node (p50 < 100 ms, p99 < 500 ms) and
            delivered ratio (1.0); then one hop between two nodes: messages/s of
            1 KB with none lost (target >= 1000)
  dht       50 overlays in one process: lookup latency of signed records
            (p50 < 100 ms) and the time of a first connection to a new peer
  registry-ingest   signed registry updates verified, applied, journaled and
            indexed per second on one core (target >= 10,000)
  registry-converge   20 nodes in two partitions, 10,000 listings on one side;
            after one link heals it, seconds until all agree (target < 10 s) and
            anti-entropy bytes over the size of what was missing (target <= 2x)
  search    query latency over 100,000 listings (p50 < 10 ms, p99 < 50 ms)
  transfer  a 256 MB build fetched between two daemons on loopback, MB/s (target
            >= 100), next to raw loopback TCP
  repair    10 nodes, one responsible peer of a released build stops: seconds
            until R copies exist again
  task      the echo agent run on another node: round trip p50/p99 (< 30 ms)
            and tasks per second with 8 in flight (>= 150)
  channel   off-chain payments per second, signed, checked and stored durably
            by both sides (target >= 2,000), and channel open and close
            latency on the embedded ledger and on a localnet
  relay     a task's round trip through a relay versus direct (p50 and ratio), and
            how many relayed connections one relay holds
  sybil     a paid task through the one real provider while 20 fake free cards
            (fresh keys, dead addresses) crowd it: seconds to the first
            (< 5), share of the next 20 through the real one (1.0)
  api       the control API under 16 concurrent clients, a real daemon process:
            GET /v1/node with a new connection per request, as the CLI does,
            p50/p99 (p50 < 3 ms) and requests per second (>= 1000); the same
            over keep-alive connections
  runtime   WebAssembly runs: cold and warm start of the wordcount example, in
            this process (warm < 2 ms) and through the worker processes (warm
            < 5 ms); runs per second on 2 workers (>= 500); fuel's cost
  localnet  a real `mercato localnet` and one Solana client: SOL transfers confirmed
            per second (target >= 500), each sent after its signatureSubscribe,
            and send-to-confirmed p50 (target < 450 ms with 400 ms slots)
  commerce  a licence bought on a real `mercato localnet`, buy to confirmed (p50
            target < 100 ms), and what the provider's cached licence check
            adds to a task's round trip (target < 1 ms)
  x402      a node's x402 gateway on a real `mercato localnet`, paid by a wallet
            with no node: one paid call (402, payment, run, settlement; p50
            target < 100 ms), as the official client makes it and by that client
            itself, and calls without payment answered 402 per second (>= 1000)
  models    a chat completion on a tiny model served by a real `llama-server`, direct
            and through two nodes (user -> provider -> engine, paid per token): what
            mercato adds to a whole answer (p50 < 15 ms) and to the first streamed
            token (p50 < 20 ms), and its streamed tokens/s over direct (>= 0.95);
            exits 2 without a built llama-server (scripts/build-llama-server)
  subcall   a composite agent making one sub-call (mercato.call) to the free echo
            agent on another node, against running echo directly: what the
            sub-call adds to a task's round trip (subcall_overhead_p50_ms < 15)

``python scripts/bench.py all`` runs every one of them, each in a fresh
interpreter, and writes ``bench-results/latest.json`` (every figure, with the
machine) and ``bench-results/latest.md`` (the table); ``--readme`` also puts the
table in README.md. A benchmark that fails is marked FAILED in the table and
makes the command exit 1; the others still run.

Every figure comes with the machine it was measured on. No benchmark asserts a
target: it reports, and the README and closing notes quote it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for benchmarks/

from mercato.node import ControlClient, DaemonNotRunning, DataDir, init_data_dir

IDLE_SETTLE_S = 3.0


def machine() -> dict[str, Any]:
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    cpu = ""
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu or platform.processor(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def _mercato_command() -> list[str]:
    script = Path(sys.executable).with_name("mercato")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mercato.cli"]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _start_and_time(datadir: DataDir) -> tuple[float, subprocess.Popen[bytes]]:
    env = {**os.environ, "MERCATO_API_PORT": "0"}
    client = ControlClient(datadir, timeout=2)
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*_mercato_command(), "node", "start", "--data-dir", str(datadir.root)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode}")
        try:
            client.health()
            return time.perf_counter() - started, proc
        except DaemonNotRunning:
            time.sleep(0.005)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)


def bench_startup(runs: int = 5) -> dict[str, Any]:
    """Median start-to-answering time over ``runs`` restarts of an initialized data dir."""
    root = Path(tempfile.mkdtemp(prefix="mercato-bench-"))
    try:
        datadir = DataDir(root / "data")
        init_data_dir(datadir)
        times, rss = [], 0.0
        for i in range(runs):
            elapsed, proc = _start_and_time(datadir)
            times.append(elapsed)
            if i == runs - 1:
                time.sleep(IDLE_SETTLE_S)  # let it settle into idle before measuring
                rss = _rss_mb(proc.pid)
            _stop(proc)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "startup_s": round(statistics.median(times), 3),
        "startup_s_runs": [round(t, 3) for t in times],
        "idle_rss_mb": round(rss, 1),
        "targets": {"startup_s": 1.0, "idle_rss_mb": 120},
    }


def bench_gossip() -> dict[str, Any]:
    from benchmarks.gossip import run

    return run()


def bench_dht() -> dict[str, Any]:
    from benchmarks.dht import run

    return run()


def bench_registry_ingest() -> dict[str, Any]:
    from benchmarks.registry import run_ingest

    return run_ingest()


def bench_registry_converge() -> dict[str, Any]:
    from benchmarks.converge import run

    return run()


def bench_search() -> dict[str, Any]:
    from benchmarks.registry import run_search

    return run_search()


def bench_transfer() -> dict[str, Any]:
    from benchmarks.transfer import run

    return run()


def bench_repair() -> dict[str, Any]:
    from benchmarks.repair import run

    return run()


def bench_task() -> dict[str, Any]:
    from benchmarks.task import run

    return run()


def bench_channel() -> dict[str, Any]:
    from benchmarks.channel import run

    return run()


def bench_relay() -> dict[str, Any]:
    from benchmarks.relay import run

    return run()


def bench_sybil() -> dict[str, Any]:
    from benchmarks.sybil import run

    return run()


def bench_api() -> dict[str, Any]:
    from benchmarks.api import run

    return run()


def bench_mcp() -> dict[str, Any]:
    from benchmarks.mcp import run

    return run()


def bench_web() -> dict[str, Any]:
    from benchmarks.web import run

    return run()


def bench_localnet() -> dict[str, Any]:
    from benchmarks.localnet import run

    return run()


def bench_commerce() -> dict[str, Any]:
    from benchmarks.commerce import run

    return run()


def bench_x402() -> dict[str, Any]:
    from benchmarks.x402 import run

    return run()


def bench_models() -> dict[str, Any]:
    from benchmarks.models import run

    return run()


def bench_subcall() -> dict[str, Any]:
    from benchmarks.subcall import run

    return run()


def bench_runtime() -> dict[str, Any]:
    from benchmarks.runtime import run

    return run()


BENCHMARKS: dict[str, Callable[[], dict[str, Any]]] = {
    "startup": bench_startup,
    "gossip": bench_gossip,
    "dht": bench_dht,
    "registry-ingest": bench_registry_ingest,
    "registry-converge": bench_registry_converge,
    "search": bench_search,
    "runtime": bench_runtime,
    "transfer": bench_transfer,
    "repair": bench_repair,
    "task": bench_task,
    "sybil": bench_sybil,
    "channel": bench_channel,
    "relay": bench_relay,
    "api": bench_api,
    "mcp": bench_mcp,
    "web": bench_web,
    "localnet": bench_localnet,
    "commerce": bench_commerce,
    "x402": bench_x402,
    "models": bench_models,
    "subcall": bench_subcall,
}


def _run_alone(name: str, timeout_s: float) -> dict[str, Any]:
    """One benchmark in a fresh interpreter (no state shared with the others); its figures,
    or ``{"error": ...}``."""
    try:
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), name],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish in {timeout_s:.0f} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip() or "no output")[-1000:]}
    figures = json.loads(lines[-1])
    figures.pop("machine", None)
    figures.pop("benchmark", None)
    return figures


def _figures(result: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """The numbers of a result, nested maps flattened as ``a.b``; lists and targets left out."""
    rows: list[tuple[str, Any]] = []
    for key, value in result.items():
        if key == "targets":
            continue
        if isinstance(value, dict):
            rows += _figures(value, f"{prefix}{key}.")
        elif isinstance(value, bool) or not isinstance(value, int | float | str):
            continue
        else:
            rows.append((prefix + key, value))
    return rows


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def markdown(results: dict[str, dict[str, Any]], host: dict[str, Any], when: str) -> str:
    """The table of every figure, with its target where the benchmark states one."""
    lines = [
        f"Every figure from one run of `python scripts/bench.py all` ({when}) on "
        f"{host['cpus']} cores ({host['cpu']}), {host['memory_gb']} GB, "
        f"Python {host['python']}, {host['system']}; loopback.",
        "",
        "| benchmark | figure | value | target |",
        "|---|---|---|---|",
    ]
    for name, result in results.items():
        if "error" in result:
            lines.append(f"| `{name}` | FAILED | {result['error'][:120]!r} | |")
            continue
        targets = result.get("targets", {})
        for key, value in _figures(result):
            target = targets.get(key, "")
            lines.append(f"| `{name}` | `{key}` | {_shown(value)} | {_shown(target)} |")
    return "\n".join(lines) + "\n"


def _write_all(results: dict[str, dict[str, Any]], out: Path, readme: bool) -> None:
    host = machine()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(
        json.dumps({"when": when, "machine": host, "results": results}, indent=2) + "\n"
    )
    table = markdown(results, host, when)
    (out / "latest.md").write_text(table)
    if readme:
        path = Path(__file__).resolve().parents[1] / "README.md"
        text = path.read_text()
        start, end = "<!-- bench:all -->\n", "<!-- /bench:all -->\n"
        if start in text and end in text:
            head, rest = text.split(start, 1)
            path.write_text(head + start + table + end + rest.split(end, 1)[1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("name", choices=[*BENCHMARKS, "all"])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench-results"),
        help="with `all`: where latest.json and latest.md go (default ./bench-results)",
    )
    parser.add_argument(
        "--readme", action="store_true", help="with `all`: also put the table in README.md"
    )
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="with `all`: seconds per benchmark"
    )
    parser.add_argument(
        "--only", help="with `all`: a comma-separated subset (default: every benchmark)"
    )
    args = parser.parse_args()
    if args.name != "all":
        # One object on the last line: figures by name, and the machine.
        print(json.dumps({"benchmark": args.name, **BENCHMARKS[args.name](), "machine": machine()}))
        return 0
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        choices = ", ".join(BENCHMARKS)
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {choices}")
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        started = time.monotonic()
        print(f"running {name}...", file=sys.stderr, flush=True)
        results[name] = _run_alone(name, args.timeout)
        state = "FAILED" if "error" in results[name] else "done"
        print(f"  {state} in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    _write_all(results, args.out, args.readme)
    print(f"wrote {args.out / 'latest.json'} and {args.out / 'latest.md'}", file=sys.stderr)
    print(json.dumps({"benchmark": "all", **results, "machine": machine()}))
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
