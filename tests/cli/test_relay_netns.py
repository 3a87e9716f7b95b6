"""Two nodes with no route between them trade through a relay, in network namespaces.

The test builds its own network (iproute2, as root): a relay namespace joined by
a veth pair to each node's namespace, the relay's address 10.77.9.9 routed from
both sides, and no forwarding in the relay's namespace, so node A and node B
cannot reach each other at all except through the relay's circuits. B is
told it is private; A finds out that it is unreachable (the relay's dial-back).
A serves an agent, B finds it in its registry, and runs it. Where namespaces cannot be made
(not root, no `ip`), it skips and says why; tests/node/test_relay.py covers the
same path on loopback with nodes that listen on no socket.
"""

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
from contextlib import ExitStack
from pathlib import Path

import pytest

from mercato.node import DataDir

from ..conftest import TEST_ENV, wait_for
from .test_run import WORDCOUNT

RELAY_IP = "10.77.9.9"


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def namespaces_or_skip() -> None:
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command (iproute2): cannot build network namespaces")
    probe = f"mrc-probe-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create network namespaces here: {made.stderr.strip()}")
    sh("ip", "netns", "del", probe)


def build_network(stack: ExitStack) -> dict[str, str]:
    """Namespaces relay, a, b; a and b each reach only the relay."""
    tag = secrets.token_hex(3)
    ns = {name: f"mrc-{name}-{tag}" for name in ("relay", "a", "b")}
    for name in ns.values():
        sh("ip", "netns", "add", name)
        stack.callback(subprocess.run, ["ip", "netns", "del", name], capture_output=True)
        sh("ip", "-n", name, "link", "set", "lo", "up")
    sh("ip", "-n", ns["relay"], "addr", "add", f"{RELAY_IP}/32", "dev", "lo")
    for side, subnet in (("a", "10.77.1"), ("b", "10.77.2")):
        inner, outer = f"v{side}{tag}", f"r{side}{tag}"
        sh("ip", "link", "add", inner, "netns", ns[side], "type", "veth", "peer", outer,
           "netns", ns["relay"])  # fmt: skip
        sh("ip", "-n", ns[side], "addr", "add", f"{subnet}.2/24", "dev", inner)
        sh("ip", "-n", ns["relay"], "addr", "add", f"{subnet}.1/24", "dev", outer)
        sh("ip", "-n", ns[side], "link", "set", inner, "up")
        sh("ip", "-n", ns["relay"], "link", "set", outer, "up")
        sh("ip", "-n", ns[side], "route", "add", f"{RELAY_IP}/32", "via", f"{subnet}.1")
    sh("ip", "netns", "exec", ns["relay"], "sysctl", "-qw", "net.ipv4.ip_forward=0")
    return ns


def cli(ns: str, datadir: DataDir, *args: str, stdin: str | None = None, env=None):
    return subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "mercato.cli", *args,
         "--data-dir", str(datadir.root)],
        input=stdin, capture_output=True, text=True, timeout=90,
        env={**os.environ, **TEST_ENV, **(env or {})},
    )  # fmt: skip


def daemon(stack: ExitStack, ns: str, datadir: DataDir, log: Path, *args: str, env=None):
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "mercato.cli", "node", "start",
             "--data-dir", str(datadir.root), "--no-mdns", *args],
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, **TEST_ENV, **(env or {})},
        )  # fmt: skip
    stack.callback(lambda: (proc.send_signal(signal.SIGKILL), proc.wait(timeout=10)))

    def answering() -> dict | None:
        if proc.poll() is not None:
            raise AssertionError(f"the daemon in {ns} exited:\n{log.read_text()}")
        done = cli(ns, datadir, "node", "status", "--json")
        return json.loads(done.stdout) if done.returncode == 0 else None

    return wait_for(answering, 30, f"the daemon in {ns}", interval=0.2)


@pytest.mark.slow
def test_two_nodes_with_no_route_between_them_trade_through_a_relay(tmp_path: Path) -> None:
    namespaces_or_skip()
    with ExitStack() as stack:
        ns = build_network(stack)
        relay, a, b = (DataDir(tmp_path / n) for n in ("relay", "a", "b"))
        for datadir in (relay, a, b):
            subprocess.run([sys.executable, "-m", "mercato.cli", "init",
                            "--data-dir", str(datadir.root)],
                           check=True, capture_output=True)  # fmt: skip
        public = "/ip4/0.0.0.0/tcp/4001"
        status = daemon(stack, ns["relay"], relay, tmp_path / "relay.log", "--role", "relay",
                        "--listen", public)  # fmt: skip
        there = f"/ip4/{RELAY_IP}/tcp/4001/p2p/{status['peer_id']}"
        # No other peer to hold a copy of the build: A binds its release alone.
        alone = {"MERCATO_BUILDS_MIN_COPIES": "0"}
        publisher = json.loads(cli(ns["a"], a, "keys", "show", "default", "--json").stdout)
        agent = f"{publisher['address']}/wordcount"
        # B is told it is private. A is not: it listens on its namespace's loopback
        # only, like a node behind NAT whose port is not forwarded, and finds out
        # from the relay's dial-back that nobody can reach it.
        natted = ("--listen", "/ip4/127.0.0.1/tcp/4001", "--bootstrap", there)
        daemon(stack, ns["a"], a, tmp_path / "a.log", *natted, "--serve", agent, env=alone)
        daemon(stack, ns["b"], b, tmp_path / "b.log", "--private", "--bootstrap", there)

        # A and B really cannot reach each other directly.
        blocked = subprocess.run(
            ["ip", "netns", "exec", ns["b"], sys.executable, "-c",
             "import socket; socket.create_connection(('10.77.1.2', 4001), timeout=2)"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert blocked.returncode != 0

        def relayed(ns_name: str, datadir: DataDir) -> bool:
            p2p = json.loads(cli(ns_name, datadir, "node", "status", "--json").stdout)["p2p"]
            return p2p["reachability"] == "relayed"

        wait_for(lambda: relayed(ns["a"], a) and relayed(ns["b"], b), 30, "both relayed", 0.5)
        shown = cli(ns["a"], a, "node", "status").stdout
        assert f"relayed, through {there}" in shown
        assert "dialed back: unreachable" in shown
        relay_shown = cli(ns["relay"], relay, "node", "status").stdout
        # The relay checked itself with the nodes connected then, at its own IP.
        dialed = rf"public \(dialed back by (1 peer|2 peers) at {RELAY_IP}\); relaying for others"
        assert re.search(dialed, relay_shown), relay_shown

        manifest = tmp_path / "MANIFEST.toml"
        manifest.write_text(
            textwrap.dedent(
                """
                name = "wordcount"
                kind = "agent"
                title = "Word count"
                summary = "Counts words."
                price = 0
                royalty_bps = 0
                """
            )
        )
        assert cli(ns["a"], a, "publish", str(manifest)).returncode == 0
        released = cli(ns["a"], a, "release", "wordcount", "1.0.0", "--build", str(WORDCOUNT),
                       env=alone)  # fmt: skip
        assert released.returncode == 0, released.stderr

        def found() -> bool:  # the registry update and the card came through the relay
            listed = cli(ns["b"], b, "providers", agent, "--json")
            return listed.returncode == 0 and bool(json.loads(listed.stdout)["providers"])

        wait_for(found, 60, "A's listing and card at B", 0.5)
        ran = cli(ns["b"], b, "run", agent, "--input", "-", stdin="one two three four five")
        assert ran.returncode == 0, ran.stderr
        assert json.loads(ran.stdout)["words"] == 5
