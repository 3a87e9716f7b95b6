"""Two daemons joining over the network, as operators run them (real processes)."""

import json

import pytest

from mercato.node import DataDir

from ..conftest import run_cli, wait_for

pytestmark = pytest.mark.slow


def status(datadir: DataDir) -> dict:
    result = run_cli("node", "status", "--json", "--data-dir", str(datadir.root))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def connected(datadir: DataDir) -> int:
    return status(datadir)["p2p"]["peers"]["connected"]


def test_two_daemons_join_ping_and_rejoin_after_restart(tmp_path, start_daemon) -> None:
    first, second = DataDir(tmp_path / "one"), DataDir(tmp_path / "two")
    start_daemon(first)
    boot = status(first)["p2p"]["listen_addrs"][0]
    assert boot.startswith("/ip4/127.0.0.1/tcp/") and "/p2p/12D3KooW" in boot
    daemon = start_daemon(second, "--bootstrap", boot)
    wait_for(lambda: connected(second) == 1, 20, "the second node to join the first")

    text = run_cli("node", "status", "--data-dir", str(second.root)).stdout
    assert "1 connected" in text and "addresses:" in text
    peers = json.loads(run_cli("peers", "--json", "--data-dir", str(second.root)).stdout)
    first_id = status(first)["peer_id"]
    assert [p["peer_id"] for p in peers["peers"]] == [first_id]
    pinged = run_cli("ping", first_id, "--data-dir", str(second.root))
    assert pinged.returncode == 0 and first_id in pinged.stdout and "ms" in pinged.stdout
    header, row = run_cli("peers", "--data-dir", str(second.root)).stdout.splitlines()
    assert header.split() == ["PEER", "ADDRESS"] and row.split()[0] == first_id
    # The start of a connected peer's id is enough, as git takes a commit's.
    by_prefix = run_cli("ping", first_id[:14], "--json", "--data-dir", str(second.root))
    assert by_prefix.returncode == 0, by_prefix.stderr
    assert json.loads(by_prefix.stdout)["peer_id"] == first_id

    # Restart the second node without --bootstrap: its address book brings it back.
    assert run_cli("node", "stop", "--data-dir", str(second.root)).returncode == 0
    daemon.wait(timeout=10)
    start_daemon(second)
    wait_for(lambda: connected(second) == 1, 20, "the restarted node to rejoin")


def test_an_unreachable_bootstrap_peer_is_logged_once(tmp_path, start_daemon) -> None:
    node = DataDir(tmp_path / "lonely")
    nobody = "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWLcbC36iN2qgzUZ7fXVs4mC99Raj4dYhxFpvvZ22ccqFG"
    daemon = start_daemon(node, "--bootstrap", nobody)
    wait_for(lambda: status(node)["p2p"]["bootstrap"][0]["failures"] >= 3, 20, "three retries")
    log = daemon.log()
    assert log.count("cannot reach peer") == 1, log
    boot = status(node)["p2p"]["bootstrap"][0]
    assert not boot["connected"] and boot["last_error"]


def test_bad_network_arguments_are_clear_errors(tmp_path) -> None:
    node = DataDir(tmp_path / "n")
    bad = run_cli("node", "start", "--data-dir", str(node.root), "--bootstrap", "not-an-addr")
    assert bad.returncode == 2 and "p2p.bootstrap" in bad.stderr and "not-an-addr" in bad.stderr
    assert not node.root.exists()  # a bad flag creates nothing
    nopeer = run_cli(
        "node", "start", "--data-dir", str(node.root), "--bootstrap", "/ip4/1.2.3.4/tcp/1"
    )
    assert nopeer.returncode == 2 and "/p2p/" in nopeer.stderr
