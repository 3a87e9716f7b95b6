"""The processes of a chaos run: a localnet ledger in the hub namespace, N daemons
each in its own namespace, and a `_probe` in every namespace to reach them.

Every process is started by the `Cluster` and killed by it when the run's
ExitStack closes, whatever happened (paused ones are continued first so that
a SIGKILL reaches them at once).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

from ._net import HUB_IP, Network

ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("_probe.py")
P2P_PORT = 4001
LEDGER_PORT = 8899
START_TIMEOUT_S = 90.0


class ClusterError(Exception):
    """A process of the run could not be started or reached; the message says why."""


def wait_until(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    """Poll ``condition`` until it returns something truthy; ClusterError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}")


class Probe:
    """A `_probe` process in one namespace; `call` is thread-safe (one request at a time)."""

    def __init__(self, prefix: list[str]) -> None:
        self._proc = subprocess.Popen(
            [*prefix, sys.executable, str(PROBE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self._lock = threading.Lock()

    def call(self, **req: Any) -> tuple[bool, Any]:
        """(True, result) or (False, error text)."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        with self._lock:
            try:
                self._proc.stdin.write(json.dumps(req) + "\n")
                self._proc.stdin.flush()
                answer = json.loads(self._proc.stdout.readline())
            except (OSError, ValueError) as exc:
                return False, f"the probe died: {exc}"
        return (True, answer["result"]) if answer["ok"] else (False, answer["error"])

    def close(self) -> None:
        with suppress(OSError):
            self._proc.kill()
        self._proc.wait(timeout=10)


class Cluster:
    """The ledger and the nodes of one run, under ``run_dir``."""

    def __init__(self, net: Network, run_dir: Path, stack: ExitStack, log: Callable[[str], None]):
        self.net, self.dir, self.log = net, run_dir, log
        self.ledger_url = f"http://{HUB_IP}:{LEDGER_PORT}"
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.paused: set[int] = set()
        self.ledger: subprocess.Popen[bytes] | None = None
        self.peer_ids: dict[int, str] = {}
        self.addresses: dict[int, str] = {}  # each node's default account (its wallet too)
        self.serve_args: dict[int, list[str]] = {}
        self.commands: set[subprocess.Popen[str]] = set()
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        stack.callback(self.stop_all)
        self.probes = {i: Probe(net.exec(i)) for i in range(net.n)}
        self.hub = Probe(net.exec(None))

    # -- paths and environment ---------------------------------------------------

    def datadir(self, i: int) -> Path:
        return self.dir / f"node{i}"

    def logfile(self, i: int) -> Path:
        return self.dir / "logs" / f"node{i}.log"

    def env(self, i: int) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "MERCATO_API_PORT": "0",
            "MERCATO_P2P_LISTEN": f"/ip4/{self.net.ip(i)}/tcp/{P2P_PORT}",
            "MERCATO_P2P_MDNS": "false",
            "MERCATO_SETTLEMENT_LEDGER": "localnet",
            "MERCATO_SETTLEMENT_RPC_URL": self.ledger_url,
            # Short timers so that a run sees repairs and dead providers within seconds.
            "MERCATO_SERVE_HEARTBEAT_S": "2",
            "MERCATO_SERVE_CARD_TTL_S": "10",
            "MERCATO_BUILDS_REPAIR_INTERVAL_S": "3",
            "MERCATO_SETTLEMENT_WATCH_INTERVAL_S": "2",  # royalty forwards, closes
        }

    def multiaddr(self, i: int) -> str:
        return f"/ip4/{self.net.ip(i)}/tcp/{P2P_PORT}/p2p/{self.peer_ids[i]}"

    # -- the CLI, as a user runs it ----------------------------------------------

    def cli(
        self, i: int, *args: str, stdin: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """``mercato ARGS --data-dir node i`` inside node i's namespace."""
        command = [*self.net.exec(i), sys.executable, "-m", "mercato.cli", *args,
                   "--data-dir", str(self.datadir(i))]  # fmt: skip
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.env(i), cwd=ROOT,
                                start_new_session=True)  # fmt: skip
        self.commands.add(proc)  # killed by stop_all if the run ends under it
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            return subprocess.CompletedProcess(command, 124, out, f"timed out after {timeout} s")
        finally:
            self.commands.discard(proc)
        return subprocess.CompletedProcess(command, proc.returncode, out, err)

    def control(self, i: int, path: str, method: str = "GET", body: Any = None,
                timeout: float = 10) -> tuple[bool, Any]:  # fmt: skip
        return self.probes[i].call(op="control", dir=str(self.datadir(i)), path=path,
                                   method=method, body=body, timeout=timeout)  # fmt: skip

    def rpc(self, method: str, *params: Any) -> Any:
        ok, result = self.hub.call(op="rpc", url=self.ledger_url, method=method,
                                   params=list(params))  # fmt: skip
        if not ok:
            raise ClusterError(f"the ledger did not answer {method}: {result}")
        return result

    # -- the ledger --------------------------------------------------------------

    def start_ledger(self) -> None:
        with (self.dir / "logs" / "ledger.log").open("ab") as out:
            self.ledger = subprocess.Popen(
                [*self.net.exec(None), sys.executable, "-m", "mercato.cli", "localnet",
                 "--dir", str(self.dir / "ledger"), "--host", HUB_IP, "--port", str(LEDGER_PORT)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
            )  # fmt: skip

        def healthy() -> bool:
            if self.ledger is not None and self.ledger.poll() is not None:
                raise ClusterError(f"the localnet exited; see {self.dir / 'logs' / 'ledger.log'}")
            return self.hub.call(op="rpc", url=self.ledger_url, method="getHealth", timeout=2)[0]

        wait_until(healthy, START_TIMEOUT_S, "the localnet ledger")

    def kill_ledger(self) -> None:
        assert self.ledger is not None
        with suppress(ProcessLookupError):
            os.killpg(self.ledger.pid, signal.SIGKILL)
        self.ledger.wait(timeout=10)

    # -- nodes -------------------------------------------------------------------

    def init_nodes(self) -> None:
        for i in range(self.net.n):
            mercato = [sys.executable, "-m", "mercato.cli"]
            where = ["--data-dir", str(self.datadir(i))]
            env = self.env(i)
            subprocess.run([*mercato, "init", *where], check=True, capture_output=True, env=env)
            shown = subprocess.run([*mercato, "keys", "show", "default", "--json", *where],
                                   check=True, capture_output=True, env=env)  # fmt: skip
            self.addresses[i] = json.loads(shown.stdout)["address"]

    def start_node(self, i: int, bootstrap: Sequence[int] = ()) -> None:
        """Start node i, joining through ``bootstrap`` (nodes started before)."""
        args = [a for j in bootstrap for a in ("--bootstrap", self.multiaddr(j))]
        with self.logfile(i).open("ab") as out:
            proc = subprocess.Popen(
                [*self.net.exec(i), sys.executable, "-m", "mercato.cli", "node", "start",
                 "--data-dir", str(self.datadir(i)), *args, *self.serve_args.get(i, [])],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
                env=self.env(i), start_new_session=True,
            )  # fmt: skip
        self.procs[i] = proc

    def wait_answering(self, i: int, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
        proc = self.procs[i]

        def answering() -> dict[str, Any] | None:
            if proc.poll() is not None:
                tail = self.logfile(i).read_text(errors="replace")[-1500:]
                raise ClusterError(f"node{i} exited; see {self.logfile(i)}:\n{tail}")
            ok, status = self.control(i, "/v1/status", timeout=3)
            return status if ok else None

        status = wait_until(answering, timeout, f"node{i}'s control API", every=0.3)
        self.peer_ids[i] = status["peer_id"]
        return status

    def up(self, i: int) -> bool:
        """Whether node i's process runs and is not paused."""
        proc = self.procs.get(i)
        return proc is not None and proc.poll() is None and i not in self.paused

    def up_nodes(self) -> list[int]:
        return [i for i in range(self.net.n) if self.up(i)]

    def kill(self, i: int) -> None:
        """SIGKILL node i's whole process group (the daemon and any worker it started)."""
        with suppress(ProcessLookupError):
            os.killpg(self.procs[i].pid, signal.SIGKILL)
        self.procs[i].wait(timeout=10)

    def pause(self, i: int) -> None:
        os.kill(self.procs[i].pid, signal.SIGSTOP)
        self.paused.add(i)

    def resume(self, i: int) -> None:
        os.kill(self.procs[i].pid, signal.SIGCONT)
        self.paused.discard(i)

    def stop_all(self) -> None:
        """Kill every process this run started, and the probes; wait for each."""
        for i in list(self.paused):
            with suppress(ProcessLookupError):
                self.resume(i)
        for proc in [*self.procs.values(), *([self.ledger] if self.ledger else [])]:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its workers too, even once it exited
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)
        for command in list(self.commands):
            with suppress(OSError):
                command.kill()
        for probe in [*self.probes.values(), self.hub]:
            probe.close()
