"""The official x402 client pays a provider's gateway, from a wallet with no node.

Real processes: a `mercato localnet`, a creator's daemon (it publishes wordcount
with a price and a royalty) and a provider's (``--serve`` it, ``--gateway`` on
loopback). The buyer is a fresh keypair the localnet's faucet funded
(``requestAirdrop``: SOL, and test tokens to its associated token account),
and the official client: @x402/fetch's ``wrapFetchWithPayment`` around an
``x402Client`` with @x402/svm's ``ExactSvmScheme`` (tests/clients/x402/pay.mjs,
in Node, as their READMEs show), configured with the localnet's RPC URL (it
reads the mint there) and allowed to spend the test mint (by default it pays
only in assets it knows, such as USDC). Balances are read from the ledger
(``getTokenAccountBalance`` on the associated token accounts).

The bad payments (replays, short, elsewhere, extra instructions, expired, ...)
are refused in-process by tests/gateway/test_gateway.py; this file is the
official client's success, the 402 it answered, and the gateway under a flood.

Needs `node` and `npm ci --prefix tests/clients/x402`; without them it skips and
says why, except under CI=true, where it fails: CI must run it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from mercato.node import DataDir
from mercato.node.tasks import Receipt
from mercato.settlement import TEST_MINT, TOKEN_AIRDROP, associated_token_address

from ..cli.test_run import WORDCOUNT
from ..conftest import budget, run_cli, wait_for

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "tests" / "clients" / "x402"
DEVNET = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1"  # x402's id of the localnet's ledger
PRICE = 250_000  # lamports in the listing; base units of the test mint at the gateway
ROYALTY_BPS = 1_000  # 10 %
ROYALTY = PRICE * ROYALTY_BPS // 10_000
AIRDROP_SOL = 10**9
FLOOD = 200  # concurrent unpaid requests, each client from its own loopback address
TEXT = b"three little words"
CLIENT_TIMEOUT_S = budget(120.0)


@pytest.fixture
def node_js() -> str:
    """The `node` to run the official client with; skips (fails under CI=true)
    without it or without tests/clients/x402 installed."""
    found = shutil.which("node")
    why = ""
    if found is None:
        why = "node is not installed: the official x402 client's test needs Node 20 and npm"
    elif not (CLIENT / "node_modules" / "@x402" / "fetch").is_dir():
        why = "tests/clients/x402/node_modules is absent: run `npm ci --prefix tests/clients/x402`"
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(why + "; on CI it must run", pytrace=False)
        pytest.skip(why)
    assert found is not None
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cli(datadir: DataDir, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, "--data-dir", str(datadir.root), timeout=90)


def json_of(datadir: DataDir, *args: str) -> Any:
    done = cli(datadir, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def rpc(url: str, method: str, *params: Any) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    answer = httpx.post(url, json=body, timeout=10).json()
    assert "error" not in answer, f"{method}: {answer['error']}"
    return answer["result"]


def sol(url: str, owner: Pubkey) -> int:
    return int(rpc(url, "getBalance", str(owner), {"commitment": "confirmed"})["value"])


def tokens(url: str, owner: Pubkey) -> int:
    """``owner``'s balance of the test mint: its associated token account's, 0 if none."""
    account = associated_token_address(owner, TEST_MINT)
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "getTokenAccountBalance",
        "params": [str(account), {"commitment": "confirmed"}],
    }
    answer = httpx.post(url, json=body, timeout=10).json()
    if "error" in answer:  # no such account (yet)
        return 0
    return int(answer["result"]["value"]["amount"])


def static(requirements: dict[str, Any]) -> dict[str, Any]:
    """Payment requirements without what changes by itself (the blockhash offered)."""
    extra = {
        k: v
        for k, v in requirements["extra"].items()
        if k not in ("recentBlockhash", "lastValidBlockHeight")
    }
    return {**requirements, "extra": extra}


def decoded(header: str) -> Any:
    return json.loads(base64.b64decode(header))


def client_lines(code: int, stdout: str, stderr: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert code == 0 and lines, f"the official client exited {code}: {stdout}\n{stderr[-3000:]}"
    return lines


@pytest.mark.slow
def test_the_official_x402_client_pays_a_provider_and_the_creator_gets_the_royalty(
    tmp_path: Path, start_daemon, start_localnet, node_js: str
) -> None:
    localnet = start_localnet()
    url = localnet.url
    env = {"MERCATO_SETTLEMENT_LEDGER": "localnet", "MERCATO_SETTLEMENT_RPC_URL": url}
    creator, provider = DataDir(tmp_path / "creator"), DataDir(tmp_path / "provider")
    start_daemon(creator, env=env)
    publisher = json_of(creator, "keys", "show", "default")["address"]
    agent = f"{publisher}/wordcount"
    there = json_of(creator, "node", "status")["p2p"]["listen_addrs"][0]
    port = free_port()
    gateway = f"http://127.0.0.1:{port}"
    serving = start_daemon(
        provider,
        "--bootstrap",
        there,
        "--serve",
        agent,
        "--gateway",
        f"127.0.0.1:{port}",
        env=env,
    )
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

    def provider_identified() -> bool:
        peers = json_of(creator, "peers")["peers"]
        return any("/mercato/build/1.0.0" in p["protocols"] for p in peers)

    wait_for(provider_identified, budget(30), "the provider to be identified")
    released = cli(creator, "release", "wordcount", "1.0.0", "--build", str(WORDCOUNT))
    assert released.returncode == 0, released.stderr

    def listed() -> dict[str, Any] | None:
        answer = httpx.get(f"{gateway}/x402/v2/agents", timeout=10)
        assert answer.status_code == 200, answer.text
        return next((a for a in answer.json()["agents"] if a["agent"] == agent), None)

    shown = wait_for(listed, budget(30), "the gateway to list the agent", interval=0.2)
    assert shown["price"] == {"amount": str(PRICE), "asset": str(TEST_MINT), "network": DEVNET}
    assert shown["royalty_bps"] == ROYALTY_BPS

    # The buyer: a fresh keypair, SOL and test tokens from the faucet, no node.
    buyer = Keypair()
    rpc(url, "requestAirdrop", str(buyer.pubkey()), AIRDROP_SOL)
    wait_for(lambda: tokens(url, buyer.pubkey()) == TOKEN_AIRDROP, budget(10), "the airdrop")
    assert sol(url, buyer.pubkey()) == AIRDROP_SOL

    # A call without payment: 402, and what it asks for.
    run_url = f"{gateway}/x402/v2/run/{agent}"
    unpaid = httpx.post(run_url, content=TEXT, timeout=10)
    assert unpaid.status_code == 402, unpaid.text
    required = decoded(unpaid.headers["PAYMENT-REQUIRED"])
    assert required["x402Version"] == 2
    (wanted,) = required["accepts"]
    provider_address = Pubkey.from_string(json_of(provider, "wallet")["address"])
    creator_address = Pubkey.from_string(json_of(creator, "wallet")["address"])
    assert {k: wanted[k] for k in ("scheme", "network", "asset", "amount", "payTo")} == {
        "scheme": "exact",
        "network": DEVNET,
        "asset": str(TEST_MINT),
        "amount": str(PRICE),
        "payTo": str(provider_address),
    }
    assert wanted["extra"]["feePayer"] == str(provider_address)
    assert wanted["maxTimeoutSeconds"] > 0

    before = {
        "provider": tokens(url, provider_address),
        "creator": tokens(url, creator_address),
        "buyer": tokens(url, buyer.pubkey()),
        "buyer_sol": sol(url, buyer.pubkey()),
    }
    config = {
        "gateway": gateway,
        "agent": agent,
        "input": TEXT.decode(),
        "secretKey": list(bytes(buyer)),
        "rpcUrl": url,
        # The client pays in its default assets only (USDC and the like) unless
        # told which other token it may spend, and how much a call.
        "allowAsset": {
            "network": DEVNET,
            "asset": str(TEST_MINT),
            "maxAmountPerPayment": str(PRICE),
        },
    }

    # The official client pays while FLOOD clients keep sending unpaid calls.
    paid, flood = trio.run(pay_under_flood, node_js, config, run_url)
    assert paid["status"] == 200, paid
    # The client took the requirements of its 402, which are those of ours (but
    # the blockhash offered, which the gateway renews every second).
    assert paid["paymentRequired"]["accepts"] == [paid["accepted"]]
    assert static(paid["accepted"]) == static(wanted)
    body = paid["body"]
    output = base64.b64decode(body["output"]["base64"])
    assert json.loads(output)["words"] == 3, body
    receipt = Receipt.verify(base64.b64decode(body["receipt"]["signed"]))
    assert receipt.outcome == "ok" and receipt.agent == agent and receipt.price == PRICE
    assert receipt.input_hash == hashlib.sha256(TEXT).digest()
    assert receipt.output_hash == hashlib.sha256(output).digest()
    settled = paid["paymentResponse"]
    assert settled["success"] is True and settled["network"] == DEVNET, settled
    assert settled["payer"] == str(buyer.pubkey())
    landed = rpc(url, "getSignatureStatuses", [settled["transaction"]])["value"][0]
    assert landed is not None and landed["err"] is None, landed

    # The flood: every unpaid call answered 402, many of them while the paid one ran.
    assert flood["statuses"] == Counter({402: flood["answered"]}), flood
    assert flood["during"] >= FLOOD, flood

    # The provider's share at once; the creator's royalty forwarded by the provider.
    wait_for(
        lambda: tokens(url, creator_address) == before["creator"] + ROYALTY,
        budget(20),
        "the royalty forwarded to the creator",
        interval=0.1,
    )
    assert tokens(url, provider_address) == before["provider"] + PRICE - ROYALTY
    assert tokens(url, buyer.pubkey()) == before["buyer"] - PRICE
    assert sol(url, buyer.pubkey()) == before["buyer_sol"]  # the node paid the fees
    assert serving.proc.poll() is None


async def pay_under_flood(
    node: str, config: dict[str, Any], run_url: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The official client's call, made once ``FLOOD`` clients (each on its own
    connection from its own loopback address, so that no per-client rate limit
    stops them) are all sending unpaid calls, which they go on sending until it
    is done. The call's line, and the flood's tally."""
    statuses: Counter[int] = Counter()
    errors: list[str] = []
    paid_window = [0.0, float("inf")]
    during = 0
    answering = 0  # clients that got their first answer
    all_started = trio.Event()
    done = trio.Event()

    async def unpaid_client(index: int) -> None:
        nonlocal during, answering
        source = f"127.0.{index // 250}.{index % 250 + 2}"  # not 127.0.0.1: the paying client's
        transport = httpx.AsyncHTTPTransport(local_address=source)
        async with httpx.AsyncClient(transport=transport, timeout=budget(30)) as client:
            first = True
            while True:
                try:
                    answer = await client.post(run_url, content=TEXT)
                except httpx.HTTPError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    return
                statuses[answer.status_code] += 1
                now = trio.current_time()
                if paid_window[0] <= now <= paid_window[1]:
                    during += 1
                if first:
                    first, answering = False, answering + 1
                    if answering == FLOOD:
                        all_started.set()
                if done.is_set():
                    return

    result: list[dict[str, Any]] = []

    async def official_client() -> None:
        await all_started.wait()
        paid_window[0] = trio.current_time()
        try:
            done_process = await trio.run_process(
                [node, str(CLIENT / "pay.mjs"), "-"],
                stdin=json.dumps(config).encode(),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                cwd=CLIENT,
            )
        finally:
            paid_window[1] = trio.current_time()
            done.set()
        result.extend(
            client_lines(
                done_process.returncode,
                done_process.stdout.decode(),
                done_process.stderr.decode(),
            )
        )

    with trio.fail_after(CLIENT_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            for index in range(FLOOD):
                nursery.start_soon(unpaid_client, index)
            nursery.start_soon(official_client)
    assert not errors, f"{len(errors)} unpaid calls failed: {errors[:5]}"
    (line,) = result
    flood = {"answered": statuses.total(), "statuses": statuses, "during": during}
    return line, flood
