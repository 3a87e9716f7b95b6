"""What `mercato node start` says at start: the addresses others dial.

A relay's operator copies its address from the first log lines and gives it to
others as a bootstrap peer (README, "Operating a relay"); a full node logs the
addresses it listens on.
"""

import json
import re
import socket

import pytest

from mercato.node import DataDir

from ..conftest import run_cli, wait_for

ADDR = re.compile(r"/ip4/(?P<host>[0-9.]+)/tcp/(?P<port>\d+)/p2p/(?P<peer>12D3KooW\w+)")


def status(datadir: DataDir) -> dict:
    result = run_cli("node", "status", "--json", "--data-dir", str(datadir.root))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def relay_addresses(log: str) -> list[re.Match[str]]:
    """The addresses on the relay's ``bootstrap address addr=...`` log lines."""
    lines = [line for line in log.splitlines() if "node: bootstrap address addr=" in line]
    return [m for line in lines if (m := ADDR.search(line))]


def test_a_relay_prints_the_address_to_give_others(initialized: DataDir, start_daemon) -> None:
    relay = start_daemon(initialized, "--role", "relay")
    found = wait_for(lambda: relay_addresses(relay.log()), 10, "the relay's address in its log")
    me = status(initialized)
    # Its own peer id on the port it listens on, the address `node status` shows:
    # one a node can dial.
    assert {m[0] for m in found} <= set(me["p2p"]["listen_addrs"]), relay.log()
    addr = found[0]
    assert addr["peer"] == me["peer_id"]
    with socket.create_connection((addr["host"], int(addr["port"])), timeout=5):
        pass
    # The first lines: right after "ready", before anything the network does.
    lines = relay.log().splitlines()
    ready = next(i for i, line in enumerate(lines) if " node: ready " in line)
    assert "bootstrap address" in lines[ready + 1]


def test_a_full_node_logs_where_it_listens(initialized: DataDir, start_daemon) -> None:
    daemon = start_daemon(initialized, "--log-json")

    def listening() -> list[dict]:
        lines = [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]
        return [line for line in lines if line["msg"] == "listening"]

    found = wait_for(listening, 10, "the listening lines")
    assert [line["addr"] for line in found] == status(initialized)["p2p"]["listen_addrs"][:8]
    assert "bootstrap address" not in daemon.log()  # that is a relay's line


@pytest.mark.slow
def test_a_node_joins_through_the_address_the_relay_printed(tmp_path, start_daemon) -> None:
    relay_dir, node_dir = DataDir(tmp_path / "relay"), DataDir(tmp_path / "node")
    relay = start_daemon(relay_dir, "--role", "relay")
    printed = wait_for(lambda: relay_addresses(relay.log()), 10, "the relay's address")[0][0]
    start_daemon(node_dir, "--bootstrap", printed)
    wait_for(lambda: status(node_dir)["p2p"]["peers"]["connected"] == 1, 20, "the node to join")
    assert status(relay_dir)["p2p"]["peers"]["connected"] == 1
