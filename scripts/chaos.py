"""A chaos run: real daemons in network namespaces, faults, and what survives them.

    python scripts/chaos.py                      # 20 nodes, every nemesis in turn
    python scripts/chaos.py --quick              # 8 nodes, kill -9 (about two minutes)
    python scripts/chaos.py --nemesis partition,ledger --nodes 12 --dir chaos-run

N daemons (`mercato node start`) run, each in its own network namespace, joined
by veth links to one bridge in a hub namespace, which also runs a localnet
ledger; they join through nodes 0 and 1, without mDNS. Creators publish and
release agents (runtime/examples), providers serve them, users search, fetch
builds and run paid tasks through channels, all with the CLI, while each
chosen nemesis acts in turn, holds its fault for --fault-s seconds and heals:

  kill       kill -9 a random 30% of the nodes, restart them on their data dirs
  partition  half the nodes on another bridge (cut off the rest and the ledger)
  isolate    one node's link down
  pause      SIGSTOP a provider, then SIGCONT
  ledger     kill -9 the localnet amid channel closes, restart it on its data
  disk       a node's data dir is a 128 MB tmpfs: filled until writes fail, freed

Then the checks: every up node holds the same registry (equal digests), every
acknowledged write is on every node, every released build is retrievable and
has its copies, every channel's lamports on the ledger equal its books, every
receipt is covered, no log holds a traceback. The figures are JSON on the last
line of stdout; the report (markdown) is in the run dir, its path on stderr.

Exit 0 when every check passed, 1 when one failed, a nemesis could not act or
the workload did nothing, 2 when namespaces cannot be made here (it needs root
and iproute2). Everything is cleaned up on the way out, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos import _invariants as inv
from chaos._cluster import Cluster, ClusterError
from chaos._nemesis import NEMESES, Nemesis, NemesisError, mount_small_disk
from chaos._net import NetError, Network, preflight
from chaos._report import machine, missed, ratio, write
from chaos._workload import Roles, Workload

AFTER_TASKS = 10  # paid tasks once everything healed: the after ratio


class Run:
    """One chaos run; `main` builds it from the command line."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.monotonic()
        self.timeline: list[str] = []
        self.checks: list[inv.Check] = []
        self.figures: dict[str, Any] = {}

    def log(self, line: str) -> None:
        stamped = f"[{time.monotonic() - self.started:6.1f} s] {line}"
        self.timeline.append(stamped)
        print(stamped, file=sys.stderr, flush=True)

    def run(self, run_dir: Path) -> bool:
        args = self.args
        rng = random.Random(args.seed)
        with ExitStack() as stack:
            net = Network(args.nodes)
            self.log(f"building {args.nodes + 1} network namespaces (tag {net.tag})")
            net.build(stack)
            roles = Roles.of(args.nodes)
            if "disk" in args.nemesis:  # a tmpfs from the start, seen by every process after
                mount_small_disk(run_dir / f"node{roles.creators[-1]}", stack)
            cluster = Cluster(net, run_dir, stack, self.log)
            cluster.init_nodes()
            workload = Workload(cluster, roles, args.seed)
            nemeses = [NEMESES[name](cluster, workload, rng) for name in args.nemesis]
            for p in roles.providers:
                cluster.serve_args[p] = workload.serve_args()
            self.start(cluster)
            self.log(f"creators {roles.creators}, providers {roles.providers}: publishing")
            workload.setup()
            stop, threads = workload.start(readers=2)
            self.log("workload running; the first paid tasks open channels")
            workload_wait = time.monotonic() + 120
            while not any(t.ok for t in workload.tasks) and time.monotonic() < workload_wait:
                time.sleep(0.5)
            time.sleep(args.fault_s / 2)  # some traffic before the first fault

            def quiet() -> None:
                """Stop the workload (what is under way ends) before the last heal, so
                that convergence is timed from the heal on a network that only heals."""
                stop.set()
                for t in threads:
                    t.join(timeout=120)

            acted, healed_at = self.faults(nemeses, workload, quiet)
            workload.phase = "after"
            self.log("every fault healed, workload stopped: checking")
            self.verify(cluster, workload, healed_at, acted)
        return all(c.ok for c in self.checks)

    def start(self, cluster: Cluster) -> None:
        n = cluster.net.n
        self.log("starting the localnet ledger in the hub namespace")
        cluster.start_ledger()
        self.log(f"starting {n} daemons")
        cluster.start_node(0)
        cluster.wait_answering(0)
        cluster.start_node(1, [0])
        cluster.wait_answering(1)
        for i in range(2, n):
            cluster.start_node(i, [0, 1])
        for i in range(2, n):
            cluster.wait_answering(i)
        self.log(f"{n} daemons answer")

    def faults(
        self, nemeses: list[Nemesis], workload: Workload, quiet: Callable[[], None]
    ) -> tuple[inv.Check, float]:
        """Each nemesis in turn: act, hold, heal. Returns the check and when the last
        heal was done."""
        check = inv.Check("nemeses: each one acted and healed")
        for k, nem in enumerate(nemeses):
            workload.phase = "during"
            self.log(f"nemesis {nem.name}: acting")
            try:
                nem.act()
                time.sleep(self.args.fault_s)  # the fault holds while the workload goes on
            except (NemesisError, NetError, ClusterError, OSError) as exc:
                check.fail(f"{nem.name} could not act: {exc}")
            if k == len(nemeses) - 1:
                self.log("stopping the workload before the last heal")
                quiet()
            try:
                nem.heal()
            except (NemesisError, NetError, ClusterError, OSError, AttributeError) as exc:
                check.fail(f"{nem.name} could not heal: {exc}")
            healed_at = time.monotonic()
            workload.phase = "between"
            check.evidence += [f"{nem.name}: {line}" for line in nem.evidence]
        return check, healed_at

    def verify(self, cluster: Cluster, workload: Workload, healed_at: float,
               acted: inv.Check) -> None:  # fmt: skip
        self.checks.append(acted)
        did = inv.Check("workload: writes landed and paid tasks ran")
        if not workload.publishes:
            did.fail("no publish was acknowledged")
        if not any(t.ok for t in workload.tasks):
            did.fail("no paid task succeeded")
        for crash in workload.crashes:
            did.fail(f"a workload thread crashed: {crash}")
        did.evidence.append(
            f"{len(workload.publishes)} publishes and {len(workload.releases)} releases "
            f"acknowledged ({workload.refused_writes} refused); {len(workload.tasks)} tasks, "
            f"{len(workload.fetches)} fetches, {len(workload.searches)} searches"
        )
        self.checks.append(did)
        registry, converge_s = inv.converged(cluster, healed_at)
        self.log(f"registry converged in {converge_s} s")
        writes, lost_writes = inv.acked_writes(cluster, workload)
        builds, retrievable = inv.builds(cluster, workload)
        self.log("paid tasks after the heal")
        for _ in range(AFTER_TASKS):
            node = workload.user()
            if node is not None:
                workload.run_task(node)
        self.log("closing every channel, comparing books and ledger")
        money, receipts, lost = inv.money(cluster, workload)
        self.checks += [registry, writes, builds, money, receipts, inv.logs(cluster)]
        self.figures.update(
            converge_s=converge_s,
            builds_retrievable_ratio=round(retrievable, 3),
            builds_retrievable_during=ratio(workload.fetches, "during"),
            lost_lamports=lost,
            lost_acked_writes=lost_writes,
            paid_tasks_during_ratio=ratio(workload.tasks, "during"),
            paid_tasks_after_ratio=ratio(workload.tasks, "after"),
            paid_tasks=len(workload.tasks),
            acked_writes=len(workload.publishes) + len(workload.releases),
            channels=money.evidence[-1].split(" ", 1)[0],
        )


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=20, help="daemons to run (default 20)")
    parser.add_argument(
        "--nemesis",
        default=",".join(NEMESES),
        help=f"comma-separated, in turn: {', '.join(NEMESES)} (default: all)",
    )
    parser.add_argument("--fault-s", type=float, default=30.0,
                        help="how long each fault holds (default 30)")  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help="8 nodes, kill only, 20 s faults: about two minutes")  # fmt: skip
    parser.add_argument("--dir", type=Path, help="run dir to keep (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    args = parser.parse_args(argv)
    if args.quick:
        args.nodes, args.nemesis, args.fault_s = 8, "kill", 20.0
    args.nemesis = [n.strip() for n in args.nemesis.split(",") if n.strip()]
    unknown = [n for n in args.nemesis if n not in NEMESES]
    if unknown or not args.nemesis:
        parser.error(f"unknown nemesis {', '.join(unknown) or '(none)'}: pick from "
                     f"{', '.join(NEMESES)}")  # fmt: skip
    if not 6 <= args.nodes <= 60:
        parser.error("--nodes must be 6 to 60 (creators, providers and users need 2 each)")
    if args.seed is None:
        args.seed = random.randrange(2**32)
    return args


def _interrupted(signum: int, _frame: object) -> None:
    """Ctrl-C, kill or a closed terminal: unwind, so that every process, namespace
    and mount of the run goes away (a background job may even ignore SIGINT)."""
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if os.geteuid() != 0:
        print("error: a chaos run builds network namespaces: run it as root", file=sys.stderr)
        return 2
    why = preflight()
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupted)  # the ExitStack cleans up on any of them
    temporary = args.dir is None
    run_dir = Path(tempfile.mkdtemp(prefix="mercato-chaos-")) if temporary else args.dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    run = Run(args)
    run.log(f"run dir {run_dir}, seed {args.seed}")
    passed, error = False, ""
    try:
        passed = run.run(run_dir)
    except (ClusterError, NetError, NemesisError, RuntimeError, KeyboardInterrupt) as exc:
        error = str(exc) or type(exc).__name__
        run.checks.append(inv.Check("run: it got to the end", ok=False, evidence=[error]))
    finally:
        if temporary:  # keep what a person reads: the report and the logs
            for item in run_dir.iterdir():
                if item.name != "logs" and item.is_dir():
                    shutil.rmtree(item, ignore_errors=True)
    run.figures.update(
        nodes=args.nodes,
        nemeses=args.nemesis,
        duration_s=round(time.monotonic() - run.started, 1),
        machine=machine(),
        seed=args.seed,
    )
    run.figures["passed"] = passed
    report = run_dir / "report.md"
    write(report, run.figures, run.checks, run.timeline)
    for check in run.checks:
        if not check.ok:
            print(f"error: check failed: {check.name}: {'; '.join(check.evidence[:3])}",
                  file=sys.stderr)  # fmt: skip
    for line in missed(run.figures) if passed else []:
        print(f"note: figure off target: {line}", file=sys.stderr)
    print(f"report: {report}", file=sys.stderr)
    print(json.dumps(run.figures))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
