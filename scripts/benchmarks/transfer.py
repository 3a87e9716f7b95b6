"""transfer: a 256 MB build between two daemons on loopback, next to raw loopback TCP.

Two `mercato node start` processes (their own data dirs); the build is stored
on the first (`builds add`), and the second fetches it (`builds fetch --from`),
verifying every chunk and writing it to disk. The figure is the build's size
over the time from the fetch request to the build being complete. Raw TCP is
one connection between two processes on the same machine, the same bytes.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mercato.node import ControlClient, DaemonNotRunning, DataDir, init_data_dir

SIZE = 256 * 1024 * 1024
ENV = {
    "MERCATO_API_PORT": "0",
    "MERCATO_P2P_LISTEN": "/ip4/127.0.0.1/tcp/0",
    "MERCATO_P2P_MDNS": "false",
}


def _start(datadir: DataDir) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mercato.cli", "node", "start", "--data-dir", str(datadir.root)],
        env={**os.environ, **ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = ControlClient(datadir, timeout=5)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            client.health()
            return proc
        except DaemonNotRunning:
            time.sleep(0.05)
    raise RuntimeError("daemon did not start")


def _sink(port_queue: Any) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port_queue.put(server.getsockname()[1])
    conn, _ = server.accept()
    received = 0
    while chunk := conn.recv(1 << 20):
        received += len(chunk)
    conn.close()


def _raw_tcp_mb_per_s() -> float:
    queue: Any = multiprocessing.Queue()
    sink = multiprocessing.Process(target=_sink, args=(queue,))
    sink.start()
    port = queue.get()
    block = os.urandom(1 << 20)
    with socket.create_connection(("127.0.0.1", port)) as conn:
        started = time.perf_counter()
        for _ in range(SIZE // len(block)):
            conn.sendall(block)
        conn.shutdown(socket.SHUT_WR)
        sink.join()
        seconds = time.perf_counter() - started
    return SIZE / seconds / 1e6


def run() -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="mercato-transfer-"))
    procs = []
    try:
        source = root / "build.bin"
        with source.open("wb") as f:
            for _ in range(SIZE // (1 << 20)):
                f.write(os.urandom(1 << 20))
        holder, fetcher = DataDir(root / "holder"), DataDir(root / "fetcher")
        for datadir in (holder, fetcher):
            init_data_dir(datadir)
            procs.append(_start(datadir))
        holder_api, fetcher_api = ControlClient(holder, 600), ControlClient(fetcher, 30)
        cid = holder_api.build_add(str(source))["cid"]
        status = holder_api.request("GET", "/v1/status")
        address = status["p2p"]["listen_addrs"][0]
        started = time.perf_counter()
        fetcher_api.build_fetch(cid, [address])
        while True:
            state = fetcher_api.build(cid)
            if state["fetch"] and state["fetch"]["finished"]:
                break
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        if not (state["build"] and state["build"]["complete"]):
            raise RuntimeError(f"fetch failed: {state}")
        mb_per_s = SIZE / seconds / 1e6
        raw = _raw_tcp_mb_per_s()
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)
    return {
        "bytes": SIZE,
        "seconds": round(seconds, 2),
        "mb_per_s": round(mb_per_s, 1),
        "raw_tcp_mb_per_s": round(raw, 1),
        "ratio_to_raw_tcp": round(mb_per_s / raw, 3),
        "targets": {"mb_per_s": 100},
    }
