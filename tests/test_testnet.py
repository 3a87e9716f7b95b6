"""scripts/testnet.py's providers: `up N --serve REF`, as a newcomer runs it on a terminal."""

import contextlib
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import budget, run_cli, wait_for
from .test_scripts import processes_under, script

ROOT = Path(__file__).resolve().parents[1]
WORDCOUNT = ROOT / "runtime" / "examples" / "wordcount"


def on_terminal(*args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run scripts/testnet.py with stderr on a terminal (a pty) and stdout on a
    pipe; return the result and what the terminal showed."""
    master, slave = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "testnet.py"), *args],
            stdout=subprocess.PIPE,
            stderr=slave,
            text=True,
            timeout=180,
            cwd=ROOT,
        )
    finally:
        os.close(slave)
    shown = b""
    with contextlib.suppress(OSError):  # EIO: every writer is gone
        while chunk := os.read(master, 4096):
            shown += chunk
    os.close(master)
    return done, shown.decode()


def status(net: Path) -> dict:
    shown = script("testnet.py", "--dir", str(net), "status", "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


@pytest.mark.slow
def test_up_serve_starts_providers_that_offer_the_agent_once_released(tmp_path: Path) -> None:
    net = tmp_path / "net"
    up, terminal = on_terminal("--dir", str(net), "up", "2", "--serve", "wordcount")
    try:
        assert up.returncode == 0, terminal
        # Progress went to the terminal, the summary to stdout.
        for step in ("starting the localnet", "starting node 1/2", "starting node 2/2"):
            assert step in terminal and step not in up.stdout, step
        node1 = str(net / "node1")
        key = run_cli("keys", "show", "default", "--json", "--data-dir", node1)
        agent = f"{json.loads(key.stdout)['address']}/wordcount"  # NAME alone: node 1's
        assert up.stdout.count(f"serves {agent}") == 1
        nodes = status(net)["nodes"]
        assert [n["serves"] for n in nodes] == [[], [agent]]  # node 1 is the user's
        assert nodes[1]["offering"] == []  # no listing yet

        published = run_cli("publish", str(WORDCOUNT / "MANIFEST.toml"), "--data-dir", node1)
        assert published.returncode == 0, published.stderr
        build = str(WORDCOUNT / "wordcount.wasm")
        released = run_cli(
            "release", "wordcount", "1.0.0", "--build", build, "--data-dir", node1, timeout=90
        )
        assert released.returncode == 0, released.stderr
        wait_for(
            lambda: status(net)["nodes"][1]["offering"] == [agent],
            budget(30),
            "node 2's card to offer the agent",
            interval=0.5,
        )
        shown = script("testnet.py", "--dir", str(net), "status").stdout
        assert f"serves {agent}  offered" in shown
        # What a user of node 1 sees: node 2 as the agent's provider.
        providers = json.loads(run_cli("providers", agent, "--json", "--data-dir", node1).stdout)
        assert [p["provider"] for p in providers["providers"]] == [nodes[1]["peer_id"]]
    finally:
        down = script("testnet.py", "--dir", str(net), "down")
    assert down.returncode == 0, down.stderr
    assert processes_under(net) == []
