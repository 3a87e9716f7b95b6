"""What people do on the network while the nemesis acts, through the CLI of their
own node, as they would: creators publish and release, users search, fetch
builds and run paid tasks. Every acknowledged write (a command that exited 0)
is recorded with what it acknowledged; every read and task with the phase it
started in ("before", "during" a fault, "after" the heal)."""

from __future__ import annotations

import json
import random
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from ._cluster import ROOT, Cluster, wait_until

EXAMPLES = ROOT / "runtime" / "examples"
# Not digest: a composite that calls a model, which a chaos network does not serve;
# its failed sub-calls differ from node to node, and released without declared
# dependencies its answers would be held to the user's own run and judged wrong.
AGENTS = ("wordcount", "echo", "json-upper")
PRICE = 2000  # lamports a task
ROYALTY_BPS = 1000  # the creator's share when another node provides
INPUT = '{"text": "the quick brown fox jumps over the lazy dog"}'
PACE_S = 0.3  # between two operations of one worker: keeps a 2-core machine usable


@dataclass
class Roles:
    creators: list[int]
    providers: list[int]
    users: list[int]

    @classmethod
    def of(cls, n: int) -> Roles:
        k = 3 if n >= 12 else 2
        return cls(list(range(k)), list(range(k, 2 * k)), list(range(2 * k, n)))


@dataclass
class Record:
    phase: str
    ok: bool
    node: int
    detail: str = ""
    at: float = field(default_factory=time.monotonic)


class Workload:
    """The agents, who makes and who serves them, and everything done so far."""

    def __init__(self, cluster: Cluster, roles: Roles, seed: int) -> None:
        self.cluster, self.roles = cluster, roles
        self.rng = random.Random(seed)
        self.phase = "before"
        self.agents: dict[str, int] = {}  # PUBLISHER/NAME -> creator node
        for k, name in enumerate(AGENTS):
            creator = roles.creators[k % len(roles.creators)]
            self.agents[f"{cluster.addresses[creator]}/{name}"] = creator
        self.publishes: list[dict[str, Any]] = []  # acknowledged: publisher, name, node
        self.releases: list[dict[str, Any]] = []  # acknowledged: publisher, name, version, cid
        self.tasks: list[Record] = []
        self.receipts: list[dict[str, Any]] = []  # channel, cumulative, payee node
        self.fetches: list[Record] = []
        self.searches: list[Record] = []
        self.refused_writes = 0
        self.crashes: list[str] = []  # tracebacks of the workload's own threads
        self.excluded: set[int] = set()  # nodes a nemesis took (their users wait)
        self._lock = threading.Lock()
        self._versions = dict.fromkeys(self.agents, 0)
        self._listing = 0
        (cluster.dir / "manifests").mkdir(exist_ok=True)

    # -- set up --------------------------------------------------------------------

    def serve_args(self) -> list[str]:
        return [a for ref in self.agents for a in ("--serve", ref)]

    def manifest(self, name: str, price: int, summary: str) -> Path:
        path = self.cluster.dir / "manifests" / f"{name}.toml"
        path.write_text(
            f'name = "{name}"\nkind = "agent"\ntitle = "{name} (chaos)"\n'
            f'summary = "{summary}"\ntags = ["chaos"]\ncapabilities = ["text"]\n'
            f"price = {price}\nroyalty_bps = {ROYALTY_BPS}\n\n"
            "[limits]\nfuel = 100_000_000\nmemory_mb = 16\ntimeout_s = 5\n"
        )
        return path

    def publish(self, node: int, name: str, price: int) -> bool:
        path = self.manifest(name, price, f"{name}, published by node {node} in a chaos run")
        done = self.cluster.cli(node, "publish", str(path), "--json")
        if done.returncode != 0:
            with self._lock:
                self.refused_writes += 1
            return False
        listing = json.loads(done.stdout)
        with self._lock:
            self.publishes.append(
                {"node": node, "publisher": listing["publisher"], "name": name, "phase": self.phase}
            )
        return True

    def release(self, ref: str) -> bool:
        node, name = self.agents[ref], ref.split("/", 1)[1]
        with self._lock:
            self._versions[ref] += 1
            version = f"1.0.{self._versions[ref]}"
        wasm = EXAMPLES / name / f"{name}.wasm"
        done = self.cluster.cli(node, "release", name, version, "--build", str(wasm), "--json",
                                timeout=90)  # fmt: skip
        if done.returncode != 0:
            with self._lock:
                self.refused_writes += 1
            return False
        outcome = json.loads(done.stdout)  # the release's outcome: version, cid, copies
        with self._lock:
            self.releases.append({**{k: outcome[k] for k in ("publisher", "name", "version",
                                  "cid")}, "node": node, "phase": self.phase})  # fmt: skip
        return True

    def setup(self) -> None:
        """Every creator publishes its agents (paid, with a royalty) and releases 1.0.1;
        returns once a user node sees a provider's card for each."""
        for ref in self.agents:
            name = ref.split("/", 1)[1]
            if not self.publish(self.agents[ref], name, PRICE):
                raise RuntimeError(f"the first publish of {ref} failed: no workload can run")
        for ref in self.agents:
            wait_until(lambda ref=ref: self.release(ref), 120, f"the first release of {ref}", 2)
        viewer = self.roles.users[0]

        def offered(ref: str) -> bool:
            ok, found = self.cluster.control(viewer, f"/v1/providers?{urlencode({'agent': ref})}")
            return ok and bool(found.get("providers"))

        for ref in self.agents:
            wait_until(lambda ref=ref: offered(ref), 120, f"a provider of {ref} at node{viewer}", 1)

    # -- operations ------------------------------------------------------------------

    def user(self) -> int | None:
        candidates = [u for u in self.roles.users if self.cluster.up(u) and u not in self.excluded]
        return self.rng.choice(candidates) if candidates else None

    def run_task(self, node: int) -> bool:
        ref = self.rng.choice(list(self.agents))
        phase = self.phase
        done = self.cluster.cli(node, "run", ref, "--yes", "--json", stdin=INPUT, timeout=90)
        ok = done.returncode == 0
        receipt = None
        if ok:
            receipt = json.loads(done.stdout).get("receipt") or {}
        with self._lock:
            self.tasks.append(Record(phase, ok, node, ref if ok else done.stderr.strip()[-300:]))
            if receipt and receipt.get("channel"):
                self.receipts.append({"channel": receipt["channel"], "node": node,
                                      "cumulative": receipt.get("cumulative", 0)})  # fmt: skip
        return ok

    def held(self, node: int) -> set[str] | None:
        ok, listed = self.cluster.control(node, "/v1/builds")
        if not ok:
            return None
        return {b["cid"] for b in listed["builds"] if b["complete"]}

    def fetch(self, node: int, cid: str) -> bool:
        """Fetch ``cid`` on ``node`` (it verifies every chunk against the CID), then let
        gc drop it again unless the node now keeps it for the network.

        Pinned while it is fetched: an unpinned build the node is not responsible
        for may be dropped by its repair loop the moment the fetch ends, before the
        CLI sees it complete ("not complete here; run the fetch again"), which
        would count a fetch that worked as one that failed."""
        phase = self.phase
        done = self.cluster.cli(node, "builds", "fetch", cid, "--pin", "--json", timeout=60)
        ok = done.returncode == 0 and cid in done.stdout
        with self._lock:
            self.fetches.append(Record(phase, ok, node, cid if ok else done.stderr.strip()[-300:]))
        if ok:
            self.cluster.cli(node, "builds", "unpin", cid)
            self.cluster.cli(node, "builds", "gc")
        return ok

    def search(self, node: int) -> None:
        phase = self.phase
        done = self.cluster.cli(node, "search", "chaos", "--json")
        with self._lock:
            self.searches.append(Record(phase, done.returncode == 0, node))

    def cids(self) -> list[str]:
        with self._lock:
            return sorted({r["cid"] for r in self.releases})

    # -- the loops -------------------------------------------------------------------

    def writer(self, stop: threading.Event) -> None:
        """Creators in turn: a new listing, then a new release of one of their agents."""
        while not stop.wait(PACE_S):
            creator = self.rng.choice(self.roles.creators)
            if not self.cluster.up(creator):
                continue
            self._listing += 1
            self.publish(creator, f"chaos-{creator}-{self._listing}", 0)
            if stop.is_set():
                break
            mine = [ref for ref, c in self.agents.items() if c == creator]
            self.release(self.rng.choice(mine))

    def reader(self, stop: threading.Event) -> None:
        """Users: paid tasks mostly, a build fetch and a search now and then."""
        while not stop.wait(PACE_S):
            node = self.user()
            if node is None:
                continue
            roll = self.rng.random()
            if roll < 0.6:
                self.run_task(node)
            elif roll < 0.85:
                held = self.held(node)
                wanted = [c for c in self.cids() if held is not None and c not in held]
                if wanted:
                    self.fetch(node, self.rng.choice(wanted))
            else:
                self.search(node)

    def _guarded(self, loop: Callable[[threading.Event], None], stop: threading.Event) -> None:
        """Run ``loop``; a bug in it (an answer it did not expect) is kept for the
        report instead of silently ending the thread."""
        try:
            loop(stop)
        except Exception:
            with self._lock:
                self.crashes.append(traceback.format_exc(limit=4))

    def start(self, readers: int) -> tuple[threading.Event, list[threading.Thread]]:
        stop = threading.Event()
        loops = [self.writer] + [self.reader] * readers
        threads = [threading.Thread(target=self._guarded, args=(loop, stop), daemon=True)
                   for loop in loops]  # fmt: skip
        for t in threads:
            t.start()
        return stop, threads
