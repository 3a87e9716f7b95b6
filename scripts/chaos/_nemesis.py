"""The faults a chaos run injects, each selectable by name (``--nemesis kill,...``).

A nemesis acts, the fault holds while the workload goes on, then it heals. Each
one proves that it acted (a killed process is gone, a partitioned node cannot
reach the other side, a paused one is stopped, the ledger died while a close
was in flight, the disk refused a write): a nemesis that could not act raises
NemesisError, and the run fails rather than pass on a fault that never was.
"""

from __future__ import annotations

import errno
import json
import random
import subprocess
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ._cluster import P2P_PORT, Cluster, ClusterError, wait_until
from ._net import HUB_IP, sh
from ._workload import Workload

KILL_FRACTION = 0.3
DISK_MB = 128


class NemesisError(Exception):
    """A nemesis could not act (or could not heal); the message says why."""


class Nemesis:
    name = ""

    def __init__(self, cluster: Cluster, workload: Workload, rng: random.Random) -> None:
        self.cluster, self.workload, self.rng = cluster, workload, rng
        self.evidence: list[str] = []

    def act(self) -> None:
        raise NotImplementedError

    def heal(self) -> None:
        raise NotImplementedError

    def note(self, line: str) -> None:
        self.evidence.append(line)
        self.cluster.log(f"{self.name}: {line}")

    def reachable(self, i: int, j: int | None) -> bool:
        """Whether node i reaches node j's p2p port (the ledger for None)."""
        host, port = (HUB_IP, 8899) if j is None else (self.cluster.net.ip(j), P2P_PORT)
        ok, result = self.cluster.probes[i].call(op="tcp", host=host, port=port, timeout=1.0)
        return ok and bool(result)

    def restart(self, i: int) -> None:
        """Start node i again on its data dir, joining through two nodes that run."""
        others = [j for j in self.cluster.up_nodes() if j != i]
        self.cluster.start_node(i, self.rng.sample(others, min(2, len(others))))
        self.cluster.wait_answering(i)


class Kill(Nemesis):
    """kill -9 a random 30% of the nodes (their whole process group), restart them later."""

    name = "kill"

    def act(self) -> None:
        n = self.cluster.net.n
        self.victims = sorted(self.rng.sample(range(n), max(1, round(KILL_FRACTION * n))))
        for i in self.victims:
            if not self.cluster.up(i):
                raise NemesisError(f"node{i} was not running before the kill")
            self.workload.excluded.add(i)
            self.cluster.kill(i)
            if self.cluster.procs[i].poll() is None:
                raise NemesisError(f"node{i} survived kill -9")
        self.note(f"killed -9 nodes {self.victims}")

    def heal(self) -> None:
        for i in self.victims:
            self.restart(i)
            self.workload.excluded.discard(i)
        self.note(f"restarted nodes {self.victims} on their data dirs")


class Partition(Nemesis):
    """The network in two halves: one half's links move to another bridge, then back."""

    name = "partition"

    def act(self) -> None:
        n = self.cluster.net.n
        self.side = sorted(self.rng.sample(range(n), n // 2))
        rest = [i for i in range(n) if i not in self.side]
        a, b = self.side[0], rest[0]
        if not self.reachable(a, b):
            raise NemesisError(f"node{a} could not reach node{b} even before the partition")
        self.cluster.net.partition(self.side)
        if self.reachable(a, b) or self.reachable(b, a):
            raise NemesisError(f"node{a} and node{b} still reach each other across the partition")
        self.note(f"partitioned {self.side} (no ledger) from {rest}; node{a} cannot reach node{b}")

    def heal(self) -> None:
        self.cluster.net.heal()
        a = self.side[0]
        wait_until(lambda: self.reachable(a, None), 10, f"node{a} to reach the hub again")
        self.note("healed: every link back on one bridge")


class Isolate(Nemesis):
    """One node's link down: it runs, alone."""

    name = "isolate"

    def act(self) -> None:
        self.victim = self.rng.choice(self.cluster.up_nodes())
        if not self.reachable(self.victim, None):
            raise NemesisError(f"node{self.victim} could not reach the hub before isolation")
        self.cluster.net.isolate(self.victim)
        if self.reachable(self.victim, None):
            raise NemesisError(f"node{self.victim} still reaches the hub with its link down")
        self.note(f"isolated node{self.victim} (its link down)")

    def heal(self) -> None:
        self.cluster.net.heal()
        wait_until(lambda: self.reachable(self.victim, None), 10, "the isolated node's link")
        self.note(f"node{self.victim}'s link is up again")


class Pause(Nemesis):
    """SIGSTOP a provider (slow but alive: its connections stay open), then SIGCONT."""

    name = "pause"

    def act(self) -> None:
        up = [p for p in self.workload.roles.providers if self.cluster.up(p)]
        if not up:
            raise NemesisError("no provider runs to pause")
        self.victim = self.rng.choice(up)
        self.cluster.pause(self.victim)
        pid = self.cluster.procs[self.victim].pid

        def stopped() -> bool:  # a signal is delivered asynchronously: look until it was
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"

        try:
            wait_until(stopped, 5, f"node{self.victim} to stop", 0.05)
        except ClusterError as exc:
            raise NemesisError(f"SIGSTOP did not stop node{self.victim}: {exc}") from None
        self.note(f"paused provider node{self.victim} (SIGSTOP, state T)")

    def heal(self) -> None:
        self.cluster.resume(self.victim)
        self.cluster.wait_answering(self.victim, timeout=30)
        self.note(f"node{self.victim} continued (SIGCONT) and answers")


class Ledger(Nemesis):
    """Providers close their channels; the localnet is killed -9 while the closes are
    under way, then restarted on the same ledger dir."""

    name = "ledger"

    def open_channels(self) -> list[tuple[int, str]]:
        found = []
        for p in self.workload.roles.providers:
            ok, listed = self.cluster.control(p, "/v1/channels")
            if ok:
                found += [
                    (p, c["stake"])
                    for c in listed["channels"]
                    if c["role"] == "payee" and c["status"] == "open" and c["paid"]
                ]
        return found

    def act(self) -> None:
        channels = self.open_channels()
        if not channels:
            raise NemesisError("no open paid channel to close: no paid task ran before it")
        self.closes: list[dict[str, Any]] = []

        def close(p: int, stake: str) -> None:
            started = time.monotonic()
            done = self.cluster.cli(p, "channel", "close", stake, timeout=60)
            self.closes.append({"node": p, "stake": stake, "rc": done.returncode,
                                "started": started, "ended": time.monotonic(),
                                "error": done.stderr.strip()[-200:]})  # fmt: skip

        threads = []
        for k, (p, stake) in enumerate(channels):
            threads.append(threading.Thread(target=close, args=(p, stake), daemon=True))
            threads[-1].start()
            if k == len(channels) // 2:
                time.sleep(1.0)  # a CLI starts in about a second: kill amid the closes
                self.killed_at = time.monotonic()
                self.cluster.kill_ledger()
        for t in threads:
            t.join(timeout=90)
        amid = [c for c in self.closes if c["started"] < self.killed_at < c["ended"]]
        self.note(f"{len(channels)} closes, ledger killed -9 with {len(amid)} under way; "
                  f"exits {[c['rc'] for c in self.closes]}")  # fmt: skip
        if not amid:
            raise NemesisError("no channel close was under way when the ledger died")

    def heal(self) -> None:
        self.cluster.start_ledger()
        self.note("localnet restarted on the same ledger dir")


class Disk(Nemesis):
    """A node's data dir is a small tmpfs; it is filled until writes fail, then freed."""

    name = "disk"

    def __init__(self, cluster: Cluster, workload: Workload, rng: random.Random) -> None:
        super().__init__(cluster, workload, rng)
        self.victim = workload.roles.creators[-1]  # as mount_small_disk chose
        self.filler = cluster.datadir(self.victim) / "chaos-filler"

    def act(self) -> None:
        self.workload.excluded.add(self.victim)
        chunk = b"\0" * (1 << 20)
        try:
            with self.filler.open("wb") as out:
                while True:
                    out.write(chunk)
                    out.flush()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise NemesisError(f"filling node{self.victim}'s disk failed: {exc}") from exc
        path = self.workload.manifest("disk-full", 0, "written on a full disk")
        done = self.cluster.cli(self.victim, "publish", str(path), "--json")
        state = "refused" if done.returncode else "accepted (it fit in pages already there)"
        self.note(f"node{self.victim}'s {DISK_MB} MB data dir is full (ENOSPC); "
                  f"a publish there was {state}")  # fmt: skip
        if done.returncode == 0:
            listing = json.loads(done.stdout)
            self.workload.publishes.append({"node": self.victim, "publisher": listing["publisher"],
                                            "name": "disk-full", "phase": "during"})  # fmt: skip

    def heal(self) -> None:
        self.filler.unlink()
        if not self.cluster.up(self.victim):
            self.note(f"node{self.victim} had exited on the full disk: restarted")
            self.restart(self.victim)
        self.workload.excluded.discard(self.victim)
        self.note(f"node{self.victim}'s disk freed")


def mount_small_disk(root: Path, stack: ExitStack) -> None:
    """Make ``root`` (the last creator's data dir) a DISK_MB tmpfs, unmounted when
    ``stack`` closes: the disk nemesis fills it. Before any process of the run
    starts: `ip netns exec` gives each its own mount namespace, which a later
    mount may not reach."""
    root.mkdir(parents=True, exist_ok=True)
    sh("mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(root))
    stack.callback(subprocess.run, ["umount", "-l", str(root)], capture_output=True)


NEMESES: dict[str, type[Nemesis]] = {
    cls.name: cls for cls in (Kill, Partition, Isolate, Pause, Ledger, Disk)
}
