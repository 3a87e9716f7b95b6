"""localnet: SOL transfers per second through a real `mercato localnet` process, and
the time from sending one to its confirmation, as a Solana client sees them.

A fresh ledger directory in a temp dir, one `mercato localnet` on a free port P
(its WebSocket endpoint on P + 1); this process is the one client (asyncio, a
minimal HTTP/1.1 client on keep-alive connections, one WebSocket). The faucet
funds a payer (``requestAirdrop``, confirmed by ``signatureSubscribe``). Every transfer of the
run is then signed up front, off the hot path, on one blockhash (a cluster
accepts a blockhash for 150 slots, about a minute; each transfer has its own
amount, so its own signature). For ``SECONDS`` the client keeps ``IN_FLIGHT``
transfers going, each confirmed the way stock clients do: ``signatureSubscribe``
(commitment confirmed) on the WebSocket, then ``sendTransaction`` (base64,
preflight on, as clients send by default), then the notification.

- ``tps``: transfers confirmed (notified) during the run, per second;
- ``confirm_p50_ms``/``confirm_p99_ms``: from the send to the notification, under
  that load; ``subscribe_p50_ms`` and ``send_p50_ms`` (the sendTransaction round
  trip) are its parts;
- ``tps_by_in_flight``: the same for ``SWEEP_SECONDS`` at other numbers in flight
  (one at a time shows a transaction's own cost);
- ``idle_confirm_p50_ms``: ``IDLE_TRANSFERS`` transfers one at a time, apart;
- ``getbalance_p50_ms``: a read, on the quiet localnet;
- ``localnet_cpu_pct``/``client_cpu_pct`` (100 = one core, over the run): which
  side was the bottleneck.

A transfer that fails (an error answer, an error notification, none in
``CONFIRM_TIMEOUT_S``) counts in ``errors``; above 1% of those sent the
benchmark fails.

It imports nothing from mercato: ``python scripts/benchmarks/localnet.py``
starts the `mercato` next to the interpreter.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

SECONDS = 10.0
IN_FLIGHT = 32  # transfers between their send and their confirmation, at most
SWEEP = (1, 8, 128)  # other numbers in flight, SWEEP_SECONDS each: tps_by_in_flight
SWEEP_SECONDS = 3.0
MAX_TRANSFERS = 40_000  # signed up front: enough for 4,000 a second
IDLE_TRANSFERS = 30
RECIPIENTS = 16
AIRDROP = 1_000 * 10**9
BASE_LAMPORTS = 1_000_000  # above the rent-exempt minimum of an empty account
MAX_ERROR_RATIO = 0.01
START_TIMEOUT_S = 60.0
RPC_TIMEOUT_S = 30.0
REQUEST_HEAD = (
    b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n"
)
CONFIRM_TIMEOUT_S = 30.0


def mercato_command() -> list[str]:
    """The `mercato` console script next to this interpreter."""
    script = Path(sys.executable).with_name("mercato")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mercato.cli"]


def free_port_pair() -> int:
    """A port P with P and P + 1 free on loopback."""
    for _ in range(100):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no two consecutive free ports on loopback")


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process and its waited-for children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


class LocalnetProcess:
    """`mercato localnet --dir DIR --port P`, stopped with SIGTERM."""

    def __init__(self, root: Path) -> None:
        self.port = free_port_pair()
        self.directory = root / "ledger"
        self.log_path = root / "localnet.log"
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                [
                    *mercato_command(),
                    "localnet",
                    "--dir",
                    str(self.directory),
                    "--port",
                    str(self.port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port + 1}"

    def wait_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        url_file = self.directory / "url"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the localnet exited: {self.log()}")
            if url_file.exists() and url_file.read_text().strip() == self.url:
                return
            time.sleep(0.05)
        raise RuntimeError(f"the localnet did not serve in {START_TIMEOUT_S:.0f} s: {self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class RpcError(RuntimeError):
    pass


class _Connection:
    """One keep-alive HTTP/1.1 connection: a request, then its answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        """The status and body of the answer to ``body``. A connection the server
        closed after its last answer (a keep-alive limit) is opened again, and the
        request sent once more: nothing reached the server on the closed one."""
        for _ in range(2):
            if self.reader is None or self.writer is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.writer.write(REQUEST_HEAD % len(body) + body)
            try:
                await self.writer.drain()
                head = await self.reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                self.close()
                continue
            lines = head.lower().split(b"\r\n")
            length = next(int(line[15:]) for line in lines if line.startswith(b"content-length:"))
            answer = await self.reader.readexactly(length)
            if b"connection: close" in lines:
                self.close()
            return int(lines[0].split()[1]), answer
        raise RpcError("the localnet closed the connection twice")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Rpc:
    """JSON-RPC over keep-alive connections, one per request in flight: a minimal
    HTTP/1.1 client, so that the client is not the bottleneck (httpx's pool, with
    32 connections, answers fewer than 400 requests a second on 2 cores)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._idle: list[_Connection] = []
        self._ids = itertools.count(1)

    async def call_raw(self, body: bytes) -> Any:
        connection = self._idle.pop() if self._idle else _Connection(self.port)
        try:
            status, raw = await asyncio.wait_for(connection.post(body), RPC_TIMEOUT_S)
        except BaseException:
            connection.close()
            raise
        self._idle.append(connection)
        answer = json.loads(raw)
        if status != 200 or "error" in answer:
            raise RpcError(f"{body[:200]!r} -> HTTP {status}: {answer}")
        return answer["result"]

    async def call(self, method: str, *params: Any) -> Any:
        request = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        return await self.call_raw(json.dumps(request).encode())

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()


@dataclass
class Subscriptions:
    """One WebSocket: ``signatureSubscribe`` requests pipelined on it, each
    notification resolving the future of its signature with its arrival time."""

    ws: Any
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _pending: dict[int, asyncio.Future[int]] = field(default_factory=dict)
    _subscribed: dict[int, asyncio.Future[tuple[float, Any]]] = field(default_factory=dict)
    _early: dict[int, tuple[float, Any]] = field(default_factory=dict)

    async def read(self) -> None:
        async for raw in self.ws:
            now = time.perf_counter()
            message = json.loads(raw)
            if "id" in message and message["id"] in self._pending:
                future = self._pending.pop(message["id"])
                if "error" in message:
                    future.set_exception(RpcError(f"signatureSubscribe: {message['error']}"))
                else:
                    future.set_result(int(message["result"]))
            elif message.get("method") == "signatureNotification":
                params = message["params"]
                sub = int(params["subscription"])
                done = self._subscribed.pop(sub, None)
                value = (now, params["result"]["value"])
                if done is None:
                    self._early[sub] = value  # before the subscription's id came back
                elif not done.done():
                    done.set_result(value)

    async def subscribe(self, signature: str) -> asyncio.Future[tuple[float, Any]]:
        """The future of ``signature``'s confirmation: (its perf_counter time, value)."""
        loop = asyncio.get_running_loop()
        request_id = next(self._ids)
        answered: asyncio.Future[int] = loop.create_future()
        self._pending[request_id] = answered
        params = [signature, {"commitment": "confirmed"}]
        request = {"jsonrpc": "2.0", "id": request_id, "method": "signatureSubscribe"}
        await self.ws.send(json.dumps({**request, "params": params}))
        sub = await answered
        confirmed: asyncio.Future[tuple[float, Any]] = loop.create_future()
        if sub in self._early:
            confirmed.set_result(self._early.pop(sub))
        else:
            self._subscribed[sub] = confirmed
        return confirmed


def signed_transfers(
    payer: Keypair, blockhash: Hash, count: int, offset: int
) -> list[tuple[bytes, str]]:
    """``count`` JSON-RPC sendTransaction bodies, each a distinct transfer, with
    their signatures."""
    recipients = [Pubkey.from_bytes(bytes([i + 1]) * 32) for i in range(RECIPIENTS)]
    bodies = []
    for i in range(count):
        ix = transfer(
            TransferParams(
                from_pubkey=payer.pubkey(),
                to_pubkey=recipients[i % RECIPIENTS],
                lamports=BASE_LAMPORTS + offset + i,
            )
        )
        tx = VersionedTransaction(
            Message.new_with_blockhash([ix], payer.pubkey(), blockhash), [payer]
        )
        encoded = base64.b64encode(bytes(tx)).decode()
        request = {
            "jsonrpc": "2.0",
            "id": i,
            "method": "sendTransaction",
            "params": [encoded, {"encoding": "base64", "preflightCommitment": "confirmed"}],
        }
        bodies.append((json.dumps(request).encode(), str(tx.signatures[0])))
    return bodies


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    subscribe_s: list[float] = field(default_factory=list)
    send_s: list[float] = field(default_factory=list)
    confirmed_in_window: int = 0
    sent: int = 0
    errors: list[str] = field(default_factory=list)


async def _one(
    rpc: Rpc, subs: Subscriptions, body: bytes, signature: str, run: Run, window_end: float
) -> None:
    try:
        asked = time.perf_counter()
        confirmed = await subs.subscribe(signature)
        started = time.perf_counter()
        answered = await rpc.call_raw(body)
        run.subscribe_s.append(started - asked)
        run.send_s.append(time.perf_counter() - started)
        if answered != signature:
            raise RpcError(f"sendTransaction answered {answered}, not {signature}")
        run.sent += 1
        at, value = await asyncio.wait_for(confirmed, CONFIRM_TIMEOUT_S)
        if value.get("err") is not None:
            raise RpcError(f"{signature} failed: {value['err']}")
    except (RpcError, TimeoutError, OSError) as exc:
        run.errors.append(str(exc) or type(exc).__name__)
        return
    run.latencies.append(at - started)
    if at <= window_end:
        run.confirmed_in_window += 1


async def _loaded(
    rpc: Rpc,
    subs: Subscriptions,
    queue: Iterator[tuple[bytes, str]],
    in_flight: int,
    seconds: float,
) -> Run:
    """``in_flight`` transfers at a time from ``queue``, for ``seconds``."""
    run = Run()
    window_end = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < window_end:
            taken = next(queue, None)
            if taken is None:
                raise RuntimeError(
                    f"all {MAX_TRANSFERS} signed transfers went: raise MAX_TRANSFERS"
                )
            await _one(rpc, subs, *taken, run, window_end)

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return run


def _check(run: Run) -> None:
    tried = run.sent + len(run.errors)
    if len(run.errors) > MAX_ERROR_RATIO * max(tried, 1):
        shown = "; ".join(run.errors[:3])
        raise RuntimeError(f"{len(run.errors)} of {tried} transfers failed: {shown}")


def _ms(seconds: list[float], q: float = 0.5) -> float:
    ordered = sorted(seconds)
    return round(ordered[int(q * (len(ordered) - 1))] * 1000, 1) if ordered else float("nan")


async def _measure(net: LocalnetProcess) -> dict[str, Any]:
    rpc = Rpc(net.port)
    payer = Keypair()
    async with websockets.connect(net.ws_url, max_size=2**22) as ws:
        subs = Subscriptions(ws)
        reader = asyncio.create_task(subs.read())
        try:
            airdrop = await rpc.call("requestAirdrop", str(payer.pubkey()), AIRDROP)
            confirmed = await subs.subscribe(airdrop)
            await asyncio.wait_for(confirmed, CONFIRM_TIMEOUT_S)
            latest = await rpc.call("getLatestBlockhash", {"commitment": "confirmed"})
            blockhash = Hash.from_string(latest["value"]["blockhash"])
            signing = time.perf_counter()
            transfers = signed_transfers(payer, blockhash, MAX_TRANSFERS, 0)
            signing_s = time.perf_counter() - signing
            queue = iter(transfers)
            cpu_net, cpu_self = cpu_seconds(net.proc.pid), time.process_time()
            started = time.perf_counter()
            run = await _loaded(rpc, subs, queue, IN_FLIGHT, SECONDS)
            elapsed = time.perf_counter() - started
            cpu_net, cpu_self = cpu_seconds(net.proc.pid) - cpu_net, time.process_time() - cpu_self
            _check(run)
            sweep = {}
            for in_flight in SWEEP:
                other = await _loaded(rpc, subs, queue, in_flight, SWEEP_SECONDS)
                _check(other)
                sweep[str(in_flight)] = round(other.confirmed_in_window / SWEEP_SECONDS, 1)
            idle = Run()
            latest = await rpc.call("getLatestBlockhash", {"commitment": "confirmed"})
            more = signed_transfers(
                payer, Hash.from_string(latest["value"]["blockhash"]), IDLE_TRANSFERS, MAX_TRANSFERS
            )
            for body, signature in more:
                await _one(rpc, subs, body, signature, idle, float("inf"))
                await asyncio.sleep(0.05)  # apart: each on a quiet localnet
            if idle.errors:
                raise RuntimeError(f"a transfer on a quiet localnet failed: {idle.errors[0]}")
            balance_times = []
            for _ in range(20):
                at = time.perf_counter()
                await rpc.call("getBalance", str(payer.pubkey()), {"commitment": "confirmed"})
                balance_times.append(time.perf_counter() - at)
        finally:
            rpc.close()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    return {
        "tps": round(run.confirmed_in_window / SECONDS, 1),
        "confirm_p50_ms": _ms(run.latencies),
        "confirm_p99_ms": _ms(run.latencies, 0.99),
        "subscribe_p50_ms": _ms(run.subscribe_s),
        "send_p50_ms": _ms(run.send_s),
        "idle_confirm_p50_ms": _ms(idle.latencies),
        "transfers_confirmed": len(run.latencies),
        "errors": len(run.errors),
        "in_flight": IN_FLIGHT,
        "seconds": round(elapsed, 2),
        "tps_by_in_flight": sweep,
        "signing_us_per_transfer": round(signing_s / MAX_TRANSFERS * 1e6, 1),
        "getbalance_p50_ms": round(statistics.median(balance_times) * 1000, 2),
        "localnet_cpu_pct": round(100 * cpu_net / elapsed, 1),
        "client_cpu_pct": round(100 * cpu_self / elapsed, 1),
    }


def run() -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="mercato-bench-localnet-"))
    net = LocalnetProcess(root)
    try:
        net.wait_serving()
        try:
            figures = asyncio.run(_measure(net))
        except Exception as exc:
            raise RuntimeError(f"{exc}\n-- the localnet's log --\n{net.log()}") from exc
    finally:
        net.stop()
        shutil.rmtree(root, ignore_errors=True)
    return {**figures, "targets": {"tps": 500, "confirm_p50_ms": 450}}


if __name__ == "__main__":
    print(json.dumps(run()))
