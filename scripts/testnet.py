"""A local testnet: N node processes on one machine, sharing one localnet ledger.

    python scripts/testnet.py up 5        # start a localnet and 5 nodes; print how to reach each
    python scripts/testnet.py up 3 --serve wordcount   # nodes 2 and 3 serve node 1's wordcount
    python scripts/testnet.py status      # who runs, peers, reachability, what each serves
    python scripts/testnet.py down        # stop them all; nothing is left running

Every node has its own data dir (``DIR/node1`` …), listens on 127.0.0.1 on
ports the system picks, runs without mDNS (a testnet must not mix with the
LAN), uses the localnet as its ledger (its faucet funds every wallet) and
joins through node 1. The processes run in their own sessions, so they outlive
this command; ``DIR/testnet.json`` records them for ``status`` and ``down``.
``DIR`` is ``./testnet`` unless ``--dir`` says otherwise.

Providers: ``--serve REF`` (repeatable) starts nodes 2..N as providers of REF
(``mercato node start --serve REF``); node 1 stays the node you publish and run
from, so with N=1 node 1 serves. REF is PUBLISHER/NAME, or NAME alone for a
listing of node 1's default account, which exists before the testnet starts:
publish and release it from node 1 (``--data-dir DIR/node1``) and the providers
offer it as soon as the release reaches them (``status`` says when). A listing
that does not exist yet is fine: a provider serves it once it arrives.

On a terminal, ``up`` says on stderr what it waits for (on a pipe it prints
only the summary on stdout).

`Testnet` is the same thing for Python (scripts/demo.py and the tests use it).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mercato.node import ControlClient, DaemonNotRunning, DataDir  # noqa: E402

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
MAX_NODES = 64


class TestnetError(Exception):
    """A testnet could not be started, reached or stopped; the message says why."""


@dataclass
class NodeInfo:
    name: str
    datadir: str
    pid: int
    peer_id: str = ""
    addr: str = ""
    api: str = ""
    log: str = ""
    serves: list[str] = field(default_factory=list)  # PUBLISHER/NAME, from --serve


@dataclass
class State:
    localnet_pid: int = 0
    ledger_url: str = ""
    nodes: list[NodeInfo] = field(default_factory=list)


def _mercato(*args: str) -> list[str]:
    return [sys.executable, "-m", "mercato.cli", *args]


def _served(args: Sequence[str]) -> list[str]:
    """The agents a `node start` command line serves (the values of its --serve)."""
    return [value for flag, value in itertools.pairwise(args) if flag == "--serve"]


def _to_terminal(message: str) -> None:
    """Progress for a person watching: on stderr when it is a terminal, else nothing
    (a script that pipes `up` reads only the summary)."""
    if sys.stderr.isatty():
        print(message, file=sys.stderr, flush=True)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _owned(pid: int, marker: str) -> bool:
    """Whether ``pid`` is still the process we started (its command line names
    ``marker``), so that a recycled pid is never signalled."""
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return _alive(pid)


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy; TestnetError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise TestnetError(f"timed out after {timeout:.0f} s waiting for {what}")


def _port_open(addr: str) -> bool:
    """Whether something accepts TCP on a ``/ip4/H/tcp/P...`` or ``http://H:P`` address."""
    if addr.startswith("http"):
        host, port = addr.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    else:
        parts = addr.strip("/").split("/")
        host, port = parts[1], parts[3]
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((host, int(port))) == 0


class Testnet:
    """A localnet ledger and N nodes under one directory (see the module docstring)."""

    def __init__(self, directory: Path, progress: Callable[[str], None] = lambda _: None) -> None:
        """``progress`` hears a line before each step of `up` that may take a while."""
        self.dir = directory.resolve()
        self.state_file = self.dir / "testnet.json"
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._progress = progress
        self._started = time.monotonic()

    def _say(self, message: str) -> None:
        self._progress(f"[{time.monotonic() - self._started:5.1f} s] {message}")

    # -- state -------------------------------------------------------------------

    def load(self) -> State:
        try:
            raw = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return State()
        except (OSError, ValueError) as exc:
            raise TestnetError(f"{self.state_file} is unreadable ({exc}); remove it") from None
        return State(raw["localnet_pid"], raw["ledger_url"], [NodeInfo(**n) for n in raw["nodes"]])

    def _save(self, state: State) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        tmp.replace(self.state_file)

    def running(self) -> bool:
        state = self.load()
        pids = [state.localnet_pid, *(n.pid for n in state.nodes)]
        return any(pid and _alive(pid) for pid in pids)

    # -- up ----------------------------------------------------------------------

    def init(self, n: int) -> list[DataDir]:
        """Create the data dirs of nodes 1..n (keys, config) without starting them."""
        if not 1 <= n <= MAX_NODES:
            raise TestnetError(f"N must be 1 to {MAX_NODES}, not {n}")
        if self.running():
            raise TestnetError(f"a testnet already runs in {self.dir}: `down` it first")
        dirs = [DataDir(self.dir / f"node{i}") for i in range(1, n + 1)]
        for i, datadir in enumerate(dirs, start=1):
            if not datadir.config_file.exists():
                self._say(f"creating the data dir of node {i}/{n} (keys, config)")
                subprocess.run(
                    _mercato("init", "--data-dir", str(datadir.root)),
                    check=True,
                    capture_output=True,
                )
        return dirs

    def up(
        self,
        n: int,
        extra: Callable[[int], Sequence[str]] = lambda i: (),
        serve: Sequence[str] = (),
    ) -> State:
        """Start the localnet and nodes 1..n (``extra(i)``: more `node start`
        arguments for node i; ``serve``: agents nodes 2..n serve, see the module
        docstring); return when every node's API answers and every node after
        the first is connected to node 1. On failure everything started is
        stopped again."""
        self._started = time.monotonic()
        dirs = self.init(n)
        refs = [self.agent_ref(ref) for ref in serve]
        providers = range(2, n + 1) if n > 1 else (1,)
        state = State()
        try:
            self._say("starting the localnet ledger")
            self._start_ledger(state)
            for i, datadir in enumerate(dirs, start=1):
                self._say(f"starting node {i}/{n}")
                bootstrap = ("--bootstrap", state.nodes[0].addr) if state.nodes else ()
                serving = [a for ref in refs for a in ("--serve", ref)] if i in providers else []
                args = (*bootstrap, *serving, *extra(i))
                state.nodes.append(self._start_node(i, datadir, state, args))
                self._save(state)
            first = state.nodes[0].peer_id
            if n > 1:
                self._say(f"waiting for node{'s 2-' if n > 2 else ' '}{n} to join node 1")
            for node in state.nodes[1:]:
                wait_until(
                    lambda node=node: first in self._peers(node), 30, f"{node.name} to join node1"
                )
        except BaseException:
            self._save(state)
            self.down()
            raise
        return state

    def agent_ref(self, ref: str) -> str:
        """PUBLISHER/NAME as given, or NAME alone as node 1's default account's."""
        if "/" in ref:
            return ref
        shown = subprocess.run(
            _mercato("keys", "show", "default", "--json", "--data-dir", str(self.dir / "node1")),
            check=True,
            capture_output=True,
        )
        return f"{json.loads(shown.stdout)['address']}/{ref}"

    def _env(self, state: State) -> dict[str, str]:
        return {
            **os.environ,
            "MERCATO_API_PORT": "0",
            "MERCATO_P2P_LISTEN": "/ip4/127.0.0.1/tcp/0",
            "MERCATO_P2P_MDNS": "false",
            "MERCATO_SETTLEMENT_LEDGER": "localnet",
            "MERCATO_SETTLEMENT_RPC_URL": state.ledger_url,
            "PYTHONPATH": str(ROOT),
        }

    def _spawn(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> int:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                env=env,
                start_new_session=True,  # outlives this command and its Ctrl-C
            )
        self._children[proc.pid] = proc
        return proc.pid

    def _start_ledger(self, state: State) -> None:
        ledger = self.dir / "ledger"
        url_file = ledger / "url"
        url_file.unlink(missing_ok=True)
        log = self.dir / "ledger.log"
        state.localnet_pid = self._spawn(
            _mercato("localnet", "--dir", str(ledger), "--port", "0"), log
        )
        self._save(state)

        def serving() -> str:
            if not _alive(state.localnet_pid):
                raise TestnetError(f"the localnet exited; see {log}")
            return url_file.read_text().strip() if url_file.exists() else ""

        state.ledger_url = wait_until(serving, START_TIMEOUT_S, "the localnet")

    def _start_node(self, i: int, datadir: DataDir, state: State, args: Sequence[str]) -> NodeInfo:
        log = datadir.root / "daemon.log"
        pid = self._spawn(
            _mercato("node", "start", "--data-dir", str(datadir.root), *args),
            log,
            self._env(state),
        )
        info = NodeInfo(f"node{i}", str(datadir.root), pid, log=str(log), serves=_served(args))

        def answering() -> dict[str, Any] | None:
            if not _alive(pid):
                raise TestnetError(f"node{i} exited; see {log}:\n{log.read_text()[-2000:]}")
            try:
                return ControlClient(datadir, timeout=2).status()
            except DaemonNotRunning:
                return None

        status = wait_until(answering, START_TIMEOUT_S, f"node{i}'s control API")
        api = json.loads(datadir.api_file.read_text())
        info.peer_id = status["peer_id"]
        info.addr = status["p2p"]["listen_addrs"][0]
        info.api = f"http://{api['host']}:{api['port']}"
        return info

    def _peers(self, node: NodeInfo) -> list[str]:
        try:
            status = ControlClient(DataDir(Path(node.datadir)), timeout=5).peers()
        except Exception:
            return []
        return [p["peer_id"] for p in status.get("peers", [])]

    # -- status ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        state = self.load()
        nodes = []
        for node in state.nodes:
            row: dict[str, Any] = {"name": node.name, "pid": node.pid, "running": _alive(node.pid)}
            if row["running"]:
                with contextlib.suppress(Exception):
                    info = ControlClient(DataDir(Path(node.datadir)), timeout=5).status()
                    p2p = info.get("p2p") or {}
                    row["peers"] = p2p.get("peers", {}).get("connected")
                    row["reachability"] = p2p.get("reachability")
                    row["services"] = info.get("services")
                row["offering"] = self._offering(node, state.nodes)
            nodes.append({**asdict(node), **row})
        return {
            "dir": str(self.dir),
            "ledger": {
                "url": state.ledger_url,
                "pid": state.localnet_pid,
                "running": bool(state.localnet_pid) and _alive(state.localnet_pid),
            },
            "nodes": nodes,
        }

    def _offering(self, node: NodeInfo, nodes: list[NodeInfo]) -> list[str] | None:
        """Which of the agents ``node`` serves its live agent card offers now, as
        node 1 (the user's node; node 2 for node 1 itself) sees it: an agent is
        offered once its listing and a release reached the provider. None when
        no other node can tell (a node leaves itself out of its providers)."""
        viewer = next((n for n in nodes if n is not node and _alive(n.pid)), None)
        if viewer is None or not node.serves:
            return None if node.serves else []
        offered = []
        client = ControlClient(DataDir(Path(viewer.datadir)), timeout=5)
        for agent in node.serves:
            with contextlib.suppress(Exception):
                cards = client.providers(agent).get("providers", [])
                if any(card.get("provider") == node.peer_id for card in cards):
                    offered.append(agent)
        return offered

    # -- down --------------------------------------------------------------------

    def down(self) -> list[str]:
        """Stop every node, then the ledger (SIGTERM, SIGKILL after STOP_TIMEOUT_S);
        return what is still open: processes alive or ports accepting, [] if none."""
        state = self.load()
        markers = [(n.pid, n.datadir) for n in state.nodes]
        if state.localnet_pid:
            markers.append((state.localnet_pid, str(self.dir / "ledger")))
        for pid, marker in markers:
            if _alive(pid) and _owned(pid, marker):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        for pid, marker in markers:
            if not self._reaped(pid, STOP_TIMEOUT_S) and _owned(pid, marker):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._reaped(pid, 5.0)
        left = [f"process {pid}" for pid, _ in markers if _alive(pid)]
        addrs = [a for n in state.nodes for a in (n.addr, n.api) if a]
        if state.ledger_url:
            addrs.append(state.ledger_url)
        left += [f"port {a}" for a in addrs if _port_open(a)]
        if not left:
            self.state_file.unlink(missing_ok=True)
        return left

    def _reaped(self, pid: int, timeout: float) -> bool:
        child = self._children.pop(pid, None)
        if child is not None:
            try:
                child.wait(timeout=timeout)
                return True
            except subprocess.TimeoutExpired:
                self._children[pid] = child
                return False
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        return not _alive(pid)


def _print_up(net: Testnet, state: State) -> None:
    print(f"testnet up in {net.dir}: ledger {state.ledger_url}")
    for node in state.nodes:
        print(f"  {node.name}  peer {node.peer_id}")
        print(f"         p2p {node.addr}")
        print(f"         api {node.api}  (token: {node.datadir}/api.token)")
        for agent in node.serves:
            print(f"      serves {agent}")
    served = sorted({a for node in state.nodes for a in node.serves})
    if served:
        first = state.nodes[0].datadir
        print("the providers offer an agent once node 1 publishes and releases it:")
        print(f"  mercato publish MANIFEST.toml --data-dir {first}")
        print(f"  mercato release NAME VERSION --build FILE.wasm --data-dir {first}")
        print("  python scripts/testnet.py status" + _dir_flag(net) + "   # offered yet?")
    print("talk to a node with its data dir, e.g.:")
    print(f"  mercato node status --data-dir {state.nodes[0].datadir}")
    print(f"  mercato search agent --data-dir {state.nodes[-1].datadir}")
    print("stop it with: python scripts/testnet.py down" + _dir_flag(net))


def _print_status(status: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(status, indent=2))
        return
    ledger = status["ledger"]
    if not status["nodes"] and not ledger["pid"]:
        print(f"no testnet in {status['dir']}")
        return
    print(f"ledger  {'running' if ledger['running'] else 'STOPPED'}  {ledger['url']}")
    for n in status["nodes"]:
        if not n["running"]:
            print(f"{n['name']:<7} STOPPED (see {n['log']})")
            continue
        print(
            f"{n['name']:<7} running  peers {n.get('peers', '?')}  "
            f"{n.get('reachability', '?')}  {n['api']}  --data-dir {n['datadir']}"
        )
        for agent in n.get("serves", []):
            if n.get("offering") is None:  # no other node to ask
                print(f"        serves {agent}")
            elif agent in n["offering"]:
                print(f"        serves {agent}  offered: the others see its card")
            else:
                why = "its listing or a release has not reached it"
                print(f"        serves {agent}  not offered yet: {why}")


def _dir_flag(net: Testnet) -> str:
    return "" if net.dir == (Path.cwd() / "testnet").resolve() else f" --dir {net.dir}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, default=Path("testnet"), help="default ./testnet")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser(
        "up",
        help="start a localnet and N nodes",
        description="Start a localnet and N nodes; with --serve, nodes 2..N are providers.",
        epilog="example: python scripts/testnet.py up 3 --serve wordcount",
    )
    up.add_argument("n", type=int, help=f"how many nodes (1 to {MAX_NODES})")
    up.add_argument(
        "--serve",
        action="append",
        default=[],
        metavar="REF",
        help="nodes 2..N (node 1 if N is 1) serve this agent: PUBLISHER/NAME, or NAME "
        "for node 1's default account's listing (repeatable)",
    )
    status = sub.add_parser("status", help="show what runs")
    status.add_argument("--json", action="store_true", help="print JSON")
    sub.add_parser("down", help="stop everything")
    args = parser.parse_args(argv)
    net = Testnet(args.dir, progress=_to_terminal)
    try:
        if args.command == "up":
            _print_up(net, net.up(args.n, serve=args.serve))
        elif args.command == "status":
            _print_status(net.status(), args.json)
        else:
            left = net.down()
            if left:
                print("still open after down: " + ", ".join(left), file=sys.stderr)
                return 1
            print(f"testnet in {net.dir} is down: no process or port left")
    except TestnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"error: {' '.join(exc.cmd)} failed: {exc.stderr.decode()[-500:]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
