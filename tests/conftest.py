"""Shared fixtures: temporary data dirs and real daemon processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # for engine.py

from engine import Engine, find_llama_server, start_llama_server, write_tiny_gguf

from mercato.node import ControlClient, DaemonNotRunning, DataDir, init_data_dir

TIME_FACTOR = float(os.environ.get("MERCATO_TEST_TIME_FACTOR", "1"))
"""Scales every time budget of the suite: set it above 1 on a slow or loaded machine."""


def budget(seconds: float) -> float:
    """A time budget in seconds, scaled by MERCATO_TEST_TIME_FACTOR."""
    return seconds * TIME_FACTOR


START_TIMEOUT_S = budget(20.0)
TEST_ENV = {
    # Loopback only, any free ports, no mDNS: tests must not touch the LAN.
    "MERCATO_API_PORT": "0",
    "MERCATO_P2P_LISTEN": "/ip4/127.0.0.1/tcp/0",
    "MERCATO_P2P_MDNS": "false",
}


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 30,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``mercato ARGS`` in a fresh interpreter, as a user would (``input_text``
    on its stdin)."""
    return subprocess.run(
        [sys.executable, "-m", "mercato.cli", *args],
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def wait_for(condition, timeout: float, what: str, interval: float = 0.02):
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class Daemon:
    """A real `mercato node start` process on a data dir."""

    datadir: DataDir
    proc: subprocess.Popen[str]
    log_path: Path

    @property
    def client(self) -> ControlClient:
        return ControlClient(self.datadir)

    def log(self) -> str:
        return self.log_path.read_text()

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)


def _answering(datadir: DataDir, proc: subprocess.Popen[str]) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"daemon exited early with code {proc.returncode}")
    try:
        ControlClient(datadir, timeout=2).check()
    except DaemonNotRunning:
        return False
    return True


@pytest.fixture
def datadir(tmp_path: Path) -> DataDir:
    return DataDir(tmp_path / "data")


@pytest.fixture
def initialized(datadir: DataDir) -> DataDir:
    init_data_dir(datadir)
    return datadir


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator:
    """Factory: start a daemon process and wait until its control API answers."""
    started: list[Daemon] = []

    def start(
        datadir: DataDir,
        *extra: str,
        env: dict[str, str] | None = None,
        wait: bool = True,
        command: list[str] | None = None,
        cwd: Path | None = None,
    ) -> Daemon:
        """``command`` replaces ``python -m mercato.cli`` (the console script, say),
        ``cwd`` the working directory."""
        log_path = tmp_path / f"daemon-{len(started)}.log"
        with log_path.open("w") as log_file:
            proc = subprocess.Popen(
                [
                    *(command or [sys.executable, "-m", "mercato.cli"]),
                    "node",
                    "start",
                    "--data-dir",
                    str(datadir.root),
                    *extra,
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, **TEST_ENV, **(env or {})},
                cwd=cwd,
            )
        daemon = Daemon(datadir, proc, log_path)
        started.append(daemon)
        if wait:
            try:
                wait_for(lambda: _answering(datadir, proc), START_TIMEOUT_S, "the control API")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n--- daemon log ---\n{daemon.log()}") from None
        return daemon

    yield start
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.proc.send_signal(signal.SIGKILL)
            daemon.proc.wait(timeout=10)


def api_info(datadir: DataDir) -> dict:
    return json.loads(datadir.api_file.read_text())


@dataclass
class Localnet:
    """A real `mercato localnet` process serving a ledger directory."""

    directory: Path
    proc: subprocess.Popen
    url: str

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=10)


@pytest.fixture
def start_localnet(tmp_path: Path) -> Iterator:
    """Factory: start `mercato localnet --dir DIR --port 0` and wait for its URL."""
    started: list[Localnet] = []

    def start(directory: Path | None = None) -> Localnet:
        directory = directory or tmp_path / "localnet"
        log_path = tmp_path / f"localnet-{len(started)}.log"
        url_file = directory / "url"
        url_file.unlink(missing_ok=True)  # a killed localnet leaves its last one
        with log_path.open("w") as log_file:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mercato.cli",
                    "localnet",
                    "--dir",
                    str(directory),
                    "--port",
                    "0",
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )

        def serving() -> str:
            if proc.poll() is not None:
                raise AssertionError(f"the localnet exited: {log_path.read_text()}")
            return url_file.read_text().strip() if url_file.exists() else ""

        localnet = Localnet(directory, proc, wait_for(serving, START_TIMEOUT_S, "the localnet"))
        started.append(localnet)
        return localnet

    yield start
    for localnet in started:
        if localnet.proc.poll() is None:
            localnet.proc.send_signal(signal.SIGKILL)
            localnet.proc.wait(timeout=10)


# --- a real inference engine: llama.cpp's llama-server on a tiny random model ---


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny llama-architecture GGUF with random weights (scripts/engine.py), written
    once per session. The engine's logs land beside it."""
    path = tmp_path_factory.mktemp("models") / "tiny.gguf"
    write_tiny_gguf(path)
    return path


@pytest.fixture(scope="session")
def llama_server_binary() -> Path:
    """The `llama-server` to run; skips (fails under CI=true) without one."""
    found = find_llama_server()
    why = ""
    if found is None:
        why = (
            "llama-server is not built: run scripts/build-llama-server (about 5 min,"
            " cached in ~/.cache/mercato/engine) or set MERCATO_LLAMA_SERVER"
        )
    elif not os.access(found, os.X_OK):
        why = f"MERCATO_LLAMA_SERVER={found} is not an executable llama-server"
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(why + "; on CI the model tests must run", pytrace=False)
        pytest.skip(why)
    assert found is not None
    return found


@pytest.fixture(scope="session")
def llama_engine(tiny_model: Path, llama_server_binary: Path) -> Iterator[Engine]:
    """One `llama-server` for the whole session, serving ``tiny_model`` as "tiny"
    (2 slots of 512 tokens, one thread) at ``engine.base_url``; usable from sync and
    trio tests alike. Shared: never kill it; a test that needs an engine to die
    starts its own with ``engine.running_llama_server``. Random weights rarely emit
    EOS: always bound ``max_tokens``."""
    engine = start_llama_server(tiny_model, binary=llama_server_binary)
    yield engine
    engine.stop()
