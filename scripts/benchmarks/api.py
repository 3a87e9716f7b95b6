"""api: the control API's latency and throughput, against a real daemon process.

A fresh data dir (`mercato init`) in a temp dir, one `mercato node start` on
it; this process is the client. It reads the address from api.json and the
token from api.token, then sends ``GET <path>`` (default /v1/node) with the
bearer token from 16 client threads at once, for 5 s after a 1 s warm-up, in
two modes:

- a new connection per request, as the CLI does (its ``http.client`` sends no
  ``Connection`` header and closes after reading the answer): the headline
  figures ``p50_ms``, ``p99_ms``, ``requests_per_s``;
- keep-alive, one persistent connection per client: ``keepalive_*``. A server
  that answers ``Connection: close`` or closes the socket is reconnected to
  transparently; ``keepalive_reconnects`` counts it.

A latency is from the first byte sent (the connect, when there is one) to the
last byte of the answer. The client is raw sockets with a minimal HTTP/1.1
parser (headers, then Content-Length bytes), so that on 2 cores it is not the
bottleneck; ``daemon_cpu_pct`` (the daemon and its child processes) and
``client_cpu_pct`` (100 = one core, over the measured window) show which side
was. Non-2xx answers and failed exchanges are
``errors``; above 1% of the requests in either mode the benchmark fails.

It imports nothing from mercato, so it runs against an older checkout too:
``<that venv>/bin/python scripts/benchmarks/api.py --path /v1/health`` starts
that venv's `mercato` (the console script next to the interpreter).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PATH = "/v1/node"
CLIENTS = 16
SECONDS = 5.0
WARMUP_S = 1.0
MAX_ERROR_RATIO = 0.01
SOCKET_TIMEOUT_S = 10.0
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
ENV = {
    "MERCATO_API_PORT": "0",
    "MERCATO_P2P_LISTEN": "/ip4/127.0.0.1/tcp/0",
    "MERCATO_P2P_MDNS": "false",
}


# -- the daemon ----------------------------------------------------------------------------


def mercato_command() -> list[str]:
    """The `mercato` console script next to this interpreter (so an old venv starts its own)."""
    script = Path(sys.executable).with_name("mercato")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mercato.cli"]


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    token: str
    log: Path

    def stop(self) -> None:
        """SIGTERM, then wait; killed (and an error) if it does not stop in time."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(
                f"the daemon did not stop within {STOP_TIMEOUT_S:g} s of SIGTERM"
            ) from None


def start_daemon(command: list[str], datadir: Path, log: Path) -> Daemon:
    """`mercato init` then `mercato node start` on ``datadir``; back once the API answers."""
    env = {**os.environ, **ENV}
    subprocess.run(
        [*command, "init", "--data-dir", str(datadir)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "node", "start", "--data-dir", str(datadir)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    daemon = None
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while daemon is None:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the daemon exited with {proc.returncode} while starting:\n{_tail(log)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the daemon's API did not answer within {START_TIMEOUT_S:g} s:\n{_tail(log)}"
                )
            daemon = _answering(proc, datadir, log)
            if daemon is None:
                time.sleep(0.02)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    return daemon


def _answering(proc: subprocess.Popen[bytes], datadir: Path, log: Path) -> Daemon | None:
    """The daemon once api.json is there and /v1/health answers 200 (from that instance)."""
    try:
        info = json.loads((datadir / "api.json").read_text())
        host, port = str(info["host"]), int(info["port"])
        token = (datadir / "api.token").read_text().strip()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    conn = _Connection(_address(host, port), _request("/v1/health", host, port, ""))
    try:
        status, _, body = conn.exchange()
    except (OSError, _BadResponse):
        return None
    finally:
        conn.close()
    if status != 200:
        return None
    with contextlib.suppress(ValueError, AttributeError):
        instance = info.get("instance")
        if instance and json.loads(body).get("instance") not in (None, instance):
            return None  # a stale api.json, and another program on its port
    return Daemon(proc, host, port, token, log)


# -- a minimal HTTP/1.1 client ---------------------------------------------------------------


class _BadResponse(Exception):
    pass


class _ClosedBeforeAnswer(_BadResponse):
    """The server closed the connection before sending any byte of an answer."""


def _address(host: str, port: int) -> tuple[int, Any]:
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    return family, sockaddr


def _request(path: str, host: str, port: int, token: str) -> bytes:
    shown = f"[{host}]" if ":" in host else host
    lines = [f"GET {path} HTTP/1.1", f"Host: {shown}:{port}", "Accept: application/json"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Connection:
    """One socket: send the request, read one answer (status line, headers, then the body)."""

    def __init__(self, address: tuple[int, Any], request: bytes) -> None:
        self.family, self.sockaddr = address
        self.request = request
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.connects = 0

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.buffer = b""

    def _connect(self) -> socket.socket:
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(SOCKET_TIMEOUT_S)
            sock.connect(self.sockaddr)
        except BaseException:
            sock.close()
            raise
        self.connects += 1
        return sock

    def exchange(self) -> tuple[int, bool, bytes]:
        """Send the request and read the answer: (status, server will close, body).

        On a reused connection that the server closed in the meantime (nothing of an
        answer came back), the request is sent again on a new one.
        """
        reused = self.sock is not None
        if self.sock is None:
            self.sock = self._connect()
        try:
            return self._send_and_read(self.sock)
        except (_ClosedBeforeAnswer, ConnectionResetError, BrokenPipeError):
            self.close()
            if not reused:
                raise
        self.sock = self._connect()
        return self._send_and_read(self.sock)

    def _send_and_read(self, sock: socket.socket) -> tuple[int, bool, bytes]:
        sock.sendall(self.request)
        data = self.buffer
        while (end := data.find(b"\r\n\r\n")) < 0:
            chunk = sock.recv(65536)
            if not chunk:
                if data:
                    raise _BadResponse("the connection closed in the middle of the headers")
                raise _ClosedBeforeAnswer("the connection closed before an answer")
            data += chunk
        head, data = data[:end].decode("latin-1"), data[end + 4 :]
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise _BadResponse(f"not an HTTP/1.x status line: {lines[0]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        closing = "close" in headers.get("connection", "").lower() or parts[0] == "HTTP/1.0"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise _BadResponse("chunked answers are not supported by this client")
        if "content-length" in headers:
            length = int(headers["content-length"])
            while len(data) < length:
                chunk = sock.recv(max(65536, length - len(data)))
                if not chunk:
                    raise _BadResponse("the connection closed in the middle of the body")
                data += chunk
            body, self.buffer = data[:length], data[length:]
        else:  # no length: the body runs to the end of the connection
            closing = True
            while chunk := sock.recv(65536):
                data += chunk
            body, self.buffer = data, b""
        if closing:
            self.close()
        return status, closing, body


# -- the load --------------------------------------------------------------------------------


@dataclass
class _Tally:
    """One client thread's results over the measured window."""

    times: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    connects: int = 0
    last_finish: float = 0.0


def _client(
    address: tuple[int, Any],
    request: bytes,
    keepalive: bool,
    measure_from: float,
    until: float,
    tally: _Tally,
) -> None:
    conn = _Connection(address, request)
    clock = time.perf_counter
    connects_before: int | None = None
    try:
        while (started := clock()) < until:
            measured = started >= measure_from
            if measured and connects_before is None:
                connects_before = conn.connects
            try:
                status, _, _ = conn.exchange()
                label = str(status)
                failed = not 200 <= status < 300
            except (OSError, _BadResponse, ValueError) as exc:
                conn.close()
                label, failed = type(exc).__name__, True
            if not keepalive:
                conn.close()
            finished = clock()
            if measured:
                tally.times.append(finished - started)
                tally.statuses[label] += 1
                tally.errors += failed
                tally.last_finish = finished
    finally:
        conn.close()
    # Connections opened in the measured window (not one carried over from the warm-up).
    tally.connects = conn.connects - (conn.connects if connects_before is None else connects_before)


def _tree_cpu_s(root: int) -> float:
    """User + system CPU seconds of a process and its descendants alive now (Linux /proc)."""
    stats: dict[int, tuple[int, float]] = {}  # pid: (parent, CPU seconds)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                ticks = int(fields[11]) + int(fields[12])
                stats[int(entry.name)] = (int(fields[1]), ticks / os.sysconf("SC_CLK_TCK"))
    tree, total, grew = {root}, 0.0, True
    while grew:
        more = {pid for pid, (parent, _) in stats.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    for pid in tree:
        total += stats.get(pid, (0, 0.0))[1]
    return total


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _load(
    daemon: Daemon, path: str, clients: int, seconds: float, warmup_s: float, keepalive: bool
) -> dict[str, Any]:
    address = _address(daemon.host, daemon.port)
    request = _request(path, daemon.host, daemon.port, daemon.token)
    measure_from = time.perf_counter() + warmup_s
    until = measure_from + seconds
    tallies = [_Tally() for _ in range(clients)]
    threads = [
        threading.Thread(
            target=_client,
            args=(address, request, keepalive, measure_from, until, tally),
            daemon=True,
        )
        for tally in tallies
    ]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, measure_from - time.perf_counter()))
    daemon_cpu, own_cpu = _tree_cpu_s(daemon.proc.pid), _own_cpu_s()
    time.sleep(max(0.0, until - time.perf_counter()))
    daemon_cpu, own_cpu = _tree_cpu_s(daemon.proc.pid) - daemon_cpu, _own_cpu_s() - own_cpu
    for thread in threads:
        thread.join(timeout=SOCKET_TIMEOUT_S * 3)
        if thread.is_alive():
            raise RuntimeError("a client thread did not finish")
    times = sorted(t for tally in tallies for t in tally.times)
    if not times:
        raise RuntimeError(f"no request completed in the {seconds:g} s measured")
    statuses: Counter[str] = Counter()
    for tally in tallies:
        statuses.update(tally.statuses)
    window = max(tally.last_finish for tally in tallies) - measure_from
    return {
        "requests": len(times),
        "p50_ms": round(statistics.median(times) * 1000, 3),
        "p99_ms": round(times[int(0.99 * len(times))] * 1000, 3),
        "requests_per_s": round(len(times) / window),
        "errors": sum(tally.errors for tally in tallies),
        "statuses": dict(sorted(statuses.items())),
        "connections": sum(tally.connects for tally in tallies),
        "daemon_cpu_pct": round(100 * daemon_cpu / seconds),
        "client_cpu_pct": round(100 * own_cpu / seconds),
    }


def _check_errors(mode: str, figures: dict[str, Any]) -> None:
    if figures["errors"] > MAX_ERROR_RATIO * figures["requests"]:
        raise RuntimeError(
            f"{mode}: {figures['errors']} of {figures['requests']} requests failed "
            f"(more than {MAX_ERROR_RATIO:.0%}); answers: {figures['statuses']}"
        )


def run(
    path: str = PATH,
    seconds: float = SECONDS,
    clients: int = CLIENTS,
    warmup_s: float = WARMUP_S,
    command: list[str] | None = None,
) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="mercato-api-"))
    daemon = None
    try:
        daemon = start_daemon(command or mercato_command(), root / "data", root / "daemon.log")
        fresh = _load(daemon, path, clients, seconds, warmup_s, keepalive=False)
        _check_errors("new connection per request", fresh)
        kept = _load(daemon, path, clients, seconds, warmup_s, keepalive=True)
        _check_errors("keep-alive", kept)
        daemon.stop()
    finally:
        if daemon is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()
        shutil.rmtree(root, ignore_errors=True)
    return {
        "path": path,
        "concurrency": clients,
        "seconds": seconds,
        "p50_ms": fresh["p50_ms"],
        "p99_ms": fresh["p99_ms"],
        "requests_per_s": fresh["requests_per_s"],
        "requests": fresh["requests"],
        "errors": fresh["errors"],
        "statuses": fresh["statuses"],
        "daemon_cpu_pct": fresh["daemon_cpu_pct"],
        "client_cpu_pct": fresh["client_cpu_pct"],
        "keepalive_p50_ms": kept["p50_ms"],
        "keepalive_p99_ms": kept["p99_ms"],
        "keepalive_requests_per_s": kept["requests_per_s"],
        "keepalive_requests": kept["requests"],
        "keepalive_errors": kept["errors"],
        "keepalive_statuses": kept["statuses"],
        # Connections opened in the measured window: the clients' first ones are opened
        # in the warm-up, so each of these follows a close by the server (or an error).
        "keepalive_reconnects": kept["connections"],
        "keepalive_daemon_cpu_pct": kept["daemon_cpu_pct"],
        "keepalive_client_cpu_pct": kept["client_cpu_pct"],
        "targets": {"p50_ms": 3, "requests_per_s": 1000},
    }


# -- standalone ------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """Like bench.py's, without importing it (it imports mercato)."""
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
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--path", default=PATH, help=f"the route to GET (default {PATH})")
    parser.add_argument(
        "--seconds", type=float, default=SECONDS, help=f"measured seconds per mode ({SECONDS:g})"
    )
    parser.add_argument(
        "--warmup", type=float, default=WARMUP_S, help=f"warm-up seconds per mode ({WARMUP_S:g})"
    )
    parser.add_argument(
        "--clients", type=int, default=CLIENTS, help=f"concurrent clients ({CLIENTS})"
    )
    parser.add_argument(
        "--mercato",
        help="the mercato command to start (default: the console script next to this python)",
    )
    args = parser.parse_args()
    command = [args.mercato] if args.mercato else None
    figures = run(args.path, args.seconds, args.clients, args.warmup, command)
    print(json.dumps({"benchmark": "api", **figures, "machine": machine()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
