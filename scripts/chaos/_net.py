"""Network namespaces for a chaos run: one per node, and a hub that holds the bridge.

Every node's namespace has one veth pair whose other end sits in the hub
namespace, enslaved to the bridge ``br0``; the hub also holds the bridge's
address (the localnet ledger listens there). Nothing touches the root
namespace's links or firewall, and every name carries the run's random tag, so
two runs (or tests/cli/test_relay_netns.py) never collide.

Faults are link changes in the hub: a partition moves one half's ports to a
second bridge ``br1`` (no address: that half loses the other half and the
ledger), isolation sets one port down.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field

SUBNET = "10.231.0"  # inside the run's own namespaces: it cannot collide with the host's
HUB_IP = f"{SUBNET}.1"


class NetError(Exception):
    """The network could not be built or changed; the message says why."""


def sh(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise NetError(f"`{' '.join(args)}` failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


def preflight() -> str | None:
    """Why namespaces cannot be made here (None when they can): probe one."""
    if shutil.which("ip") is None:
        return "no `ip` command (install iproute2): cannot build network namespaces"
    probe = f"mch-probe-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create network namespaces here (run as root?): {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@dataclass
class Network:
    """The namespaces of one run; built by `build`, torn down by the ExitStack."""

    n: int
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    cut: set[int] = field(default_factory=set)  # ports on br1 (partitioned off)
    down: set[int] = field(default_factory=set)  # ports set down (isolated)

    @property
    def hub(self) -> str:
        return f"mch-{self.tag}-hub"

    def ns(self, i: int) -> str:
        return f"mch-{self.tag}-{i}"

    def ip(self, i: int) -> str:
        return f"{SUBNET}.{10 + i}"

    def port(self, i: int) -> str:
        """The hub-side end of node i's veth (interface names: 15 characters at most)."""
        return f"c{self.tag}p{i}"

    def build(self, stack: ExitStack) -> None:
        """Create the hub, the bridges and every node's namespace and link; each is
        deleted again when ``stack`` closes (deleting a namespace deletes its links).
        The nodes' links are made a few at a time: each `ip` call costs ~0.1 s."""
        names = [self.hub, *(self.ns(i) for i in range(self.n))]
        for name in names:
            stack.callback(subprocess.run, ["ip", "netns", "del", name], capture_output=True)
        self._namespace(self.hub)
        for bridge in ("br0", "br1"):
            sh("ip", "-n", self.hub, "link", "add", bridge, "type", "bridge")
            sh("ip", "-n", self.hub, "link", "set", bridge, "up")
        sh("ip", "-n", self.hub, "addr", "add", f"{HUB_IP}/24", "dev", "br0")
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(self._node, range(self.n)))  # list(): raise the first failure

    def _namespace(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def _node(self, i: int) -> None:
        self._namespace(self.ns(i))
        inner = f"c{self.tag}n{i}"
        sh("ip", "link", "add", inner, "netns", self.ns(i), "type", "veth",
           "peer", self.port(i), "netns", self.hub)  # fmt: skip
        sh("ip", "-n", self.ns(i), "addr", "add", f"{self.ip(i)}/24", "dev", inner)
        sh("ip", "-n", self.ns(i), "link", "set", inner, "up")
        sh("ip", "-n", self.hub, "link", "set", self.port(i), "master", "br0")
        sh("ip", "-n", self.hub, "link", "set", self.port(i), "up")

    def partition(self, side: list[int]) -> None:
        """Cut ``side`` off the rest (and off the ledger): their ports move to br1."""
        for i in side:
            sh("ip", "-n", self.hub, "link", "set", self.port(i), "master", "br1")
            self.cut.add(i)

    def isolate(self, i: int) -> None:
        sh("ip", "-n", self.hub, "link", "set", self.port(i), "down")
        self.down.add(i)

    def heal(self) -> None:
        """Every port back on br0 and up."""
        for i in sorted(self.cut):
            sh("ip", "-n", self.hub, "link", "set", self.port(i), "master", "br0")
        for i in sorted(self.down):
            sh("ip", "-n", self.hub, "link", "set", self.port(i), "up")
        self.cut.clear()
        self.down.clear()

    def exec(self, i: int | None) -> list[str]:
        """The command prefix that runs a program in node i's namespace (the hub's for None)."""
        return ["ip", "netns", "exec", self.hub if i is None else self.ns(i)]
