"""Three node processes on a localnet sell, use and refund a licence with the CLI;
a provider restarted after the refund still refuses the licence."""

import json
import sqlite3
import textwrap
from pathlib import Path

import httpx
import pytest

from mercato.node import ControlClient, DataDir

from ..conftest import run_cli, wait_for
from .test_run import WORDCOUNT

PRO = 50_000_000


def cli(datadir: DataDir, *args: str, stdin: str | None = None):
    return run_cli(*args, "--data-dir", str(datadir.root), input_text=stdin, timeout=90)


def json_of(datadir: DataDir, *args: str):
    done = cli(datadir, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def balance(url: str, address: str) -> int:
    body = {"jsonrpc": "2.0", "id": 1, "method": "getBalance", "params": [address]}
    return httpx.post(url, json=body, timeout=10).json()["result"]["value"]


def stop(datadir: DataDir, daemon) -> None:
    assert cli(datadir, "node", "stop").returncode == 0
    daemon.wait(timeout=30)


@pytest.mark.slow
def test_a_licence_sold_used_and_refunded_between_daemons_on_a_localnet(
    tmp_path: Path, start_daemon, start_localnet
) -> None:
    localnet = start_localnet()
    env = {"MERCATO_SETTLEMENT_LEDGER": "localnet", "MERCATO_SETTLEMENT_RPC_URL": localnet.url}
    creator, provider, user = (DataDir(tmp_path / n) for n in ("creator", "provider", "user"))
    start_daemon(creator, env=env)
    publisher = json_of(creator, "keys", "show", "default")["address"]
    agent = f"{publisher}/wordcount"
    there = json_of(creator, "node", "status")["p2p"]["listen_addrs"][0]
    serving = start_daemon(provider, "--bootstrap", there, "--serve", agent, env=env)
    buyer = start_daemon(user, "--bootstrap", there, env=env)
    manifest = tmp_path / "MANIFEST.toml"
    manifest.write_text(
        textwrap.dedent(
            f"""
            name = "wordcount"
            kind = "agent"
            title = "Word count"
            summary = "Counts words."
            price = 0
            royalty_bps = 0

            [plans.pro]
            kind = "licence"
            price = {PRO}
            versions = "^1"
            refund_days = 7
            """
        )
    )
    assert cli(creator, "publish", str(manifest)).returncode == 0

    def provider_identified() -> bool:
        peers = json_of(creator, "peers")["peers"]
        return any("/mercato/build/1.0.0" in p["protocols"] for p in peers)

    wait_for(provider_identified, 30, "the provider to be identified")
    released = cli(creator, "release", "wordcount", "1.0.0", "--build", str(WORDCOUNT))
    assert released.returncode == 0, released.stderr
    wait_for(lambda: json_of(user, "providers", agent)["providers"], 30, "the provider's card")
    shown = cli(user, "show", agent)
    assert shown.returncode == 0 and "pro" in shown.stdout and "licence" in shown.stdout

    # Without a licence the run is refused, and says how to buy one.
    refused = cli(user, "run", agent, "--input", "-", stdin="a b c")
    assert refused.returncode != 0 and f"mercato buy {agent} --plan pro" in refused.stderr

    address = json_of(creator, "wallet")["address"]
    before = balance(localnet.url, address)
    bought = json_of(user, "buy", agent, "--plan", "pro")
    assert balance(localnet.url, address) == before + PRO
    assert (bought["plan"], bought["versions"], bought["state"]) == ("pro", "^1", "active")
    (held,) = json_of(user, "licences")["licences"]
    assert held["mint"] == bought["mint"]
    sold = json_of(creator, "sales")
    assert [s["mint"] for s in sold["sales"]] == [bought["mint"]]

    done = ControlClient(user).run_task(agent, "*", b"three little words")
    assert done["licence"] == bought["mint"] and done["receipt"]["version"] == "1.0.0"

    refunded = json_of(user, "refund", bought["mint"])
    assert refunded["state"] == "refunded"
    assert balance(localnet.url, address) == before - 5000  # the price went back; its fee

    # A user's node restored from before the refund still offers the licence; the
    # provider, restarted (no cache), reads the ledger and refuses it.
    stop(user, buyer)
    with sqlite3.connect(user.db_file) as db:
        db.execute("UPDATE licences_held SET refunded = ''")
    stop(provider, serving)
    start_daemon(provider, "--bootstrap", there, "--serve", agent, env=env)
    start_daemon(user, "--bootstrap", there, env=env)
    wait_for(lambda: json_of(user, "providers", agent)["providers"], 30, "the provider's card")
    again = cli(user, "run", agent, "--input", "-", stdin="a b c")
    assert again.returncode != 0 and "revoked" in again.stderr, again.stderr
