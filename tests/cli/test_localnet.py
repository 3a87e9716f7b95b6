"""Two node processes trading on a localnet: a channel opened by hand, 100 paid
tasks, the close, and balances that add up to the lamport."""

import base64
import json
import textwrap
from pathlib import Path

import httpx
import pytest

from mercato.node import ControlClient, DataDir
from mercato.settlement import TEST_MINT, TOKEN_AIRDROP

from ..conftest import run_cli, wait_for
from .test_run import WORDCOUNT

PRICE = 10_000_000  # lamports a task
ROYALTY_BPS = 1000  # the creator's 10 %
FEE = 5000  # lamports per signature
TASKS = 100


def cli(datadir: DataDir, *args: str, stdin: str | None = None):
    return run_cli(*args, "--data-dir", str(datadir.root), input_text=stdin, timeout=60)


def rpc(url: str, method: str, *params):
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    return httpx.post(url, json=body, timeout=10).json()["result"]


def balance(url: str, address: str) -> int:
    return rpc(url, "getBalance", address)["value"]


def json_of(datadir: DataDir, *args: str):
    done = cli(datadir, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_two_nodes_on_a_localnet_pay_for_100_tasks_and_close(
    tmp_path: Path, start_daemon, start_localnet
) -> None:
    localnet = start_localnet()
    env = {"MERCATO_SETTLEMENT_LEDGER": "localnet", "MERCATO_SETTLEMENT_RPC_URL": localnet.url}
    creator, provider, user = (DataDir(tmp_path / n) for n in ("creator", "provider", "user"))
    start_daemon(creator, env=env)
    publisher = json_of(creator, "keys", "show", "default")["address"]
    agent = f"{publisher}/wordcount"
    there = json_of(creator, "node", "status")["p2p"]["listen_addrs"][0]
    start_daemon(provider, "--bootstrap", there, "--serve", agent, env=env)
    start_daemon(user, "--bootstrap", there, env=env)
    # Every wallet was funded by the localnet's faucet, on the one shared ledger.
    wallets = {d: json_of(d, "wallet") for d in (creator, provider, user)}
    assert {w["ledger"] for w in wallets.values()} == {"localnet"}
    address = {d: w["address"] for d, w in wallets.items()}
    assert all(balance(localnet.url, a) == 10 * 10**9 for a in address.values())
    # ... and with 1,000 tokens of the localnet's test mint (for x402), at its cost.
    test_tokens = {"mint": str(TEST_MINT), "amount": TOKEN_AIRDROP, "decimals": 6}
    assert all(w["tokens"] == [test_tokens] for w in wallets.values())
    dropped = cli(user, "wallet", "airdrop", "1.5")
    assert dropped.returncode == 0 and "received 1,500,000,000 lamports (1.5 SOL)" in dropped.stdout
    shown = cli(user, "wallet").stdout
    assert f"2000 tokens ({2 * TOKEN_AIRDROP} base units) of mint {TEST_MINT}" in shown
    assert cli(user, "wallet", "address").stdout.strip() == address[user]

    manifest = tmp_path / "MANIFEST.toml"
    manifest.write_text(
        textwrap.dedent(
            f"""
            name = "wordcount"
            kind = "agent"
            title = "Word count"
            summary = "Counts words."
            price = {PRICE}
            royalty_bps = {ROYALTY_BPS}
            """
        )
    )
    assert cli(creator, "publish", str(manifest)).returncode == 0
    provider_addr = json_of(provider, "node", "status")["p2p"]["listen_addrs"][0]
    provider_id = provider_addr.rsplit("/", 1)[1]
    assert cli(creator, "ping", provider_addr).returncode == 0

    def provider_identified() -> bool:
        peers = json_of(creator, "peers")["peers"]
        return any("/mercato/build/1.0.0" in p["protocols"] for p in peers)

    wait_for(provider_identified, 30, "the provider to be identified")
    released = run_cli("release", "wordcount", "1.0.0", "--build", str(WORDCOUNT),
                       "--data-dir", str(creator.root), timeout=90)  # fmt: skip
    assert released.returncode == 0, released.stderr

    def known() -> bool:
        return bool(json_of(user, "providers", agent)["providers"])

    wait_for(known, 30, "the provider's card at the user's node")

    # A channel opened by hand; paid tasks then use it.
    opened = json_of(user, "channel", "open", provider_id, "--deposit", "2", "--duration", "4h")
    stake = opened["stake"]
    assert opened["payee"] == address[provider] and opened["deposit"] == 2 * 10**9
    before = {d: balance(localnet.url, a) for d, a in address.items()}

    client = ControlClient(user)
    for i in range(TASKS):
        done = client.run_task(agent, "*", b"task %d of the hundred" % i)
        assert json.loads(base64.b64decode(done["output"]))["words"] == 5
        assert done["receipt"]["channel"] == stake
        assert done["receipt"]["cumulative"] == (i + 1) * PRICE

    (served,) = json_of(provider, "channel", "ls")["channels"]
    assert served["stake"] == stake and served["role"] == "payee"
    assert served["paid"] == TASKS * PRICE and served["settled"] == served["owed"]
    # The payer cannot take its deposit back before the lockup ends.
    early = cli(user, "channel", "refund", stake)
    assert early.returncode == 1 and "lockup" in early.stderr
    closed = cli(provider, "channel", "close", stake)
    assert closed.returncode == 0, closed.stderr
    assert json_of(provider, "channel", "show", stake)["status"] == "closed"

    after = {d: balance(localnet.url, a) for d, a in address.items()}
    share = PRICE * (10_000 - ROYALTY_BPS) // 10_000
    assert after[provider] - before[provider] == TASKS * share - 2 * FEE  # it paid the close
    assert after[creator] - before[creator] == TASKS * (PRICE - share)  # to the lamport
    # What the deposit did not pay came back at the close; the stake account keeps
    # its rent until the user's refund after the lockup.
    assert after[user] - before[user] == 2 * 10**9 - TASKS * PRICE
    stake_rent = rpc(localnet.url, "getMinimumBalanceForRentExemption", 200)
    assert balance(localnet.url, stake) == stake_rent
