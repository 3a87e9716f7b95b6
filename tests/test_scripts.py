"""scripts/testnet.py and scripts/demo.py, run as a newcomer would run them."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def script(name: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def processes_under(directory: Path) -> list[str]:
    """Command lines of running processes that name ``directory``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(directory) in cmdline and state != "Z":
            found.append(cmdline)
    return found


@pytest.mark.slow
def test_testnet_up_5_then_down_leaves_no_process_and_no_port(tmp_path: Path) -> None:
    net = tmp_path / "net"
    up = script("testnet.py", "--dir", str(net), "up", "5")
    try:
        assert up.returncode == 0, up.stderr
        assert up.stderr == ""  # progress is for a terminal: nothing on a pipe
        assert up.stdout.count(" api http://127.0.0.1:") == 5
        status = json.loads(script("testnet.py", "--dir", str(net), "status", "--json").stdout)
        assert status["ledger"]["running"]
        assert [n["running"] for n in status["nodes"]] == [True] * 5
        # Every node joined through node 1, which sees the other four.
        assert status["nodes"][0]["peers"] >= 4
        # A second `up` on a running testnet is refused and starts nothing.
        again = script("testnet.py", "--dir", str(net), "up", "2")
        assert again.returncode == 1 and "already runs" in again.stderr
        assert len(processes_under(net)) == 6
    finally:
        down = script("testnet.py", "--dir", str(net), "down")
    assert down.returncode == 0, down.stderr
    assert "no process or port left" in down.stdout
    assert processes_under(net) == []
    ports = [n["addr"] for n in status["nodes"]] + [n["api"] for n in status["nodes"]]
    for addr in ports:  # nothing accepts on any of them any more
        host, port = _host_port(addr)
        with socket.socket() as probe:
            assert probe.connect_ex((host, port)) != 0, addr


def _host_port(addr: str) -> tuple[str, int]:
    if addr.startswith("http"):
        host, port = addr.split("//", 1)[1].rsplit(":", 1)
        return host, int(port)
    parts = addr.strip("/").split("/")
    return parts[1], int(parts[3])


@pytest.mark.slow
def test_the_demo_tells_the_whole_story_and_leaves_nothing_running(tmp_path: Path) -> None:
    demo = script("demo.py", "--dir", str(tmp_path / "demo"), timeout=300)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    for step in (
        "Every wallet is funded",
        "published ",
        "is held by: ",
        "The user searches",
        "paid so far on channel",
        "closed ",
        "royalty ",
        "its call to wordcount cost",
        "The whole story ran in",
    ):
        assert step in demo.stdout, step
    assert processes_under(tmp_path / "demo") == []


def test_bench_all_writes_every_figure_as_json_and_a_table(tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = script("bench.py", "all", "--only", "startup", "--out", str(out), timeout=120)
    assert done.returncode == 0, done.stderr
    saved = json.loads((out / "latest.json").read_text())
    assert saved["machine"]["cpus"] >= 1
    startup = saved["results"]["startup"]
    assert 0 < startup["startup_s"] < 60 and startup["idle_rss_mb"] > 10
    table = (out / "latest.md").read_text()
    assert f"| `startup` | `startup_s` | {startup['startup_s']:,.3g} | 1 |" in table
    assert "| `startup` | `idle_rss_mb` |" in table
    assert f"{saved['machine']['cpus']} cores" in table
    # The last line is the same figures, for scripts that read stdout.
    assert json.loads(done.stdout.strip().splitlines()[-1])["startup"] == startup


@pytest.mark.slow
def test_the_simulation_measures_every_part_and_says_what_limits_first(tmp_path: Path) -> None:
    out = tmp_path / "sim.json"
    done = script("simulate.py", "--smoke", "--out", str(out), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert json.loads(done.stdout.strip().splitlines()[-1]) == result
    curve = result["model"]["curve"]
    assert [row["n"] for row in curve] == [25, 50, 100, 1000]
    for row in curve:  # every update reached every node, and lookups found their key
        assert row["propagation_s"]["max"] > 0 and row["dht"]["found_closest"] >= 0.95
    # On one card topic, load per node grows with N (every node hears every card);
    # on group topics it grows with the agents a node follows; hops barely grow.
    single = [row["gossip_msgs_in_per_s_per_node_single_topic"] for row in curve]
    assert single[2] > 3 * single[0]
    groups = curve[-1]
    assert 0 < groups["gossip_msgs_in_per_s_per_node"] < single[-1] / 5
    assert groups["groups"]["groups_joined_per_node"] <= 3
    assert 0 < groups["card_to_followers_p99_s"] < 2
    assert groups["groups"]["first_lookup"]["card_requests"] >= 1
    assert curve[2]["dht"]["hops_mean"] <= curve[0]["dht"]["hops_mean"] + 2
    # Real nodes, each its own process: every probe arrived everywhere, and the
    # registry converged after the partition healed.
    (real,) = result["real"]
    assert real["real_nodes"] == 6 and real["real_delivered_ratio"] == 1.0, real
    assert 0 < real["real_p50_s"] <= real["real_p99_s"] < 30
    assert real["real_converged_same_digest"] and real["real_converge_after_partition_s"] > 0
    assert real["real_dht_lookup_found"] == 1.0
    assert result["extrapolated_10000"]["n"] == 10_000
    assert result["limits_first"]["part"] and result["machine"]["cpus"] >= 1
