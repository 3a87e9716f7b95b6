"""x402: one paid call over plain HTTP at a node's gateway, and unpaid calls per second.

A real `mercato localnet` (a fresh ledger in a temp dir) and two daemon
processes on it: a creator that publishes the `echo` example (it computes next
to nothing) at ``PRICE`` with no royalty, and a provider that serves it,
``mercato node start --serve ... --gateway 127.0.0.1:PORT``. The buyer is a
fresh keypair with SOL and test tokens from the localnet's faucet, and no node:
this process is its client.

- ``paid_call_p50_ms``/``paid_call_p99_ms``: ``PAID_CALLS`` calls, one at a
  time, each as the official client (@x402/fetch with @x402/svm) makes it: POST
  the input without payment, get 402 and decode ``PAYMENT-REQUIRED``; build the
  transaction as @x402/svm's ExactSvmScheme does (SetComputeUnitLimit 20,000,
  SetComputeUnitPrice 1, TransferChecked to ``payTo``'s token account, a memo
  with a random nonce; version 0; the node as fee payer, its signature left
  empty; the blockhash ``extra.recentBlockhash`` or else ``getLatestBlockhash``;
  the mint's decimals read once, as its mint cache does), sign it as the buyer;
  POST again with ``PAYMENT-SIGNATURE`` and get 200: the gateway checks the
  payment, simulates it, runs the agent, co-signs and settles on the ledger,
  then answers output, receipt and ``PAYMENT-RESPONSE``. One keep-alive
  connection, as fetch keeps. ``unpaid_leg_p50_ms``, ``build_p50_ms`` and
  ``paid_leg_p50_ms`` are its three parts;
- ``official_client_p50_ms``: the same calls made by the official client itself
  (tests/clients/x402/pay.mjs, Node; allowed to spend the test mint, up to
  ``PRICE`` a call), ``OFFICIAL_CALLS`` in one process, the first left out
  (imports, connections, the mint's read), timed in Node; absent, with
  ``official_client`` saying why, without `node` or `npm ci --prefix
  tests/clients/x402`;
- ``unpaid_402_per_s``: ``CLIENTS`` threads each sending the call without
  payment on a keep-alive connection for ``SECONDS`` after ``WARMUP_S``; if more
  than 1% of the answers are not a 402 with requirements, the benchmark fails.
  The gateway's per-client rate
  limit (all of them come from 127.0.0.1) is raised to its maximum for this
  (``MERCATO_GATEWAY_RATE_PER_MIN``): this measures the 402 path, not the
  limiter. ``unpaid_402_p50_ms``, ``unpaid_new_connection_per_s`` (a new
  connection per call), ``gateway_cpu_pct`` and ``client_cpu_pct`` (100 = one
  core) say where the time goes.

The client's HTTP for the unpaid load is the minimal raw-socket one of the
``api`` benchmark, so that on 2 cores it is not the bottleneck.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import textwrap
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from mercato.settlement import TEST_MINT, associated_token_address, transfer_checked

from .api import _address, _BadResponse, _Connection, _own_cpu_s, _tree_cpu_s, mercato_command

ROOT = Path(__file__).resolve().parents[2]
ECHO = ROOT / "runtime" / "examples" / "echo" / "echo.wasm"
OFFICIAL_CLIENT = ROOT / "tests" / "clients" / "x402"
PRICE = 10_000  # lamports in the listing; base units of the test mint at the gateway
ROYALTY_BPS = 0  # no forward after each call: the call's own path is measured
INPUT = b"hello, x402"
PAID_CALLS = 100
WARM_CALLS = 5
OFFICIAL_CALLS = 11
CLIENTS = 16
SECONDS = 5.0
WARMUP_S = 1.0
MAX_ERROR_RATIO = 0.01
START_TIMEOUT_S = 60.0
# What @x402/svm's ExactSvmScheme puts in every payment.
COMPUTE_UNIT_LIMIT = 20_000
COMPUTE_UNIT_PRICE = 1
MEMO_PROGRAM = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")
ENV = {
    "MERCATO_API_PORT": "0",
    "MERCATO_P2P_LISTEN": "/ip4/127.0.0.1/tcp/0",
    "MERCATO_P2P_MDNS": "false",
    "MERCATO_SETTLEMENT_LEDGER": "localnet",
    "MERCATO_GATEWAY_RATE_PER_MIN": "1000000",
}


# -- the localnet and the daemon --------------------------------------------------------------


def _wait(condition: Any, what: str, proc: subprocess.Popen[bytes], log: Path) -> Any:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not (value := condition()):
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited:\n{log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)
    return value


def _start_localnet(root: Path, command: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    url_file, log = root / "localnet" / "url", root / "localnet.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "localnet", "--dir", str(root / "localnet"), "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = _wait(
        lambda: url_file.exists() and url_file.read_text().strip(), "the localnet", proc, log
    )
    return proc, url


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class _Gateway:
    proc: subprocess.Popen[bytes]  # the provider's daemon
    url: str
    agent: str


def _start_nodes(
    root: Path, command: list[str], ledger_url: str, procs: list[subprocess.Popen[bytes]]
) -> _Gateway:
    """Two daemons (added to ``procs`` as they start): a creator that publishes
    echo at PRICE and releases it, and a provider that serves it, with its
    gateway on loopback. A release needs a peer to hold the build: one daemon
    alone cannot release."""
    env = {**os.environ, **ENV, "MERCATO_SETTLEMENT_RPC_URL": ledger_url}

    def mercato(name: str, *args: str) -> str:
        done = subprocess.run(
            [*command, *args, "--data-dir", str(root / name)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"mercato {' '.join(args)}: {done.stderr}")
        return done.stdout

    def start(name: str, *args: str) -> subprocess.Popen[bytes]:
        mercato(name, "init")
        log = root / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*command, "node", "start", "--data-dir", str(root / name), *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        procs.append(proc)
        _wait(lambda: (root / name / "api.json").exists(), f"the {name}'s daemon", proc, log)
        return proc

    creator = start("creator")
    there = json.loads(mercato("creator", "node", "status", "--json"))["p2p"]["listen_addrs"][0]
    publisher = json.loads(mercato("creator", "keys", "show", "default", "--json"))["address"]
    agent = f"{publisher}/echo"
    port = _free_port()
    provider = start("provider", "--bootstrap", there, "--serve", agent,
                     "--gateway", f"127.0.0.1:{port}")  # fmt: skip
    gateway = _Gateway(provider, f"http://127.0.0.1:{port}", agent)
    manifest = root / "MANIFEST.toml"
    manifest.write_text(
        textwrap.dedent(
            f"""
            name = "echo"
            kind = "agent"
            title = "Echo"
            summary = "Echo."
            price = {PRICE}
            royalty_bps = {ROYALTY_BPS}
            """
        )
    )
    mercato("creator", "publish", str(manifest))

    def provider_identified() -> bool:
        peers = json.loads(mercato("creator", "peers", "--json"))["peers"]
        return any("/mercato/build/1.0.0" in p["protocols"] for p in peers)

    _wait(provider_identified, "the provider to be identified", creator, root / "creator.log")
    mercato("creator", "release", "echo", "1.0.0", "--build", str(ECHO))

    def listed() -> bool:
        try:
            answer = httpx.get(f"{gateway.url}/x402/v2/agents", timeout=5)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200 and gateway.agent in answer.text

    _wait(listed, "the gateway to list echo", gateway.proc, root / "provider.log")
    return gateway


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- a buyer, as the official client pays -----------------------------------------------------


def _rpc(client: httpx.Client, url: str, method: str, *params: Any) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    answer = client.post(url, json=body).json()
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


def _token_balance(client: httpx.Client, url: str, owner: Pubkey, mint: Pubkey) -> int:
    account = str(associated_token_address(owner, mint))
    body = {"jsonrpc": "2.0", "id": 1, "method": "getTokenAccountBalance", "params": [account]}
    answer = client.post(url, json=body).json()
    return 0 if "error" in answer else int(answer["result"]["value"]["amount"])


def _fund(client: httpx.Client, url: str, buyer: Keypair) -> None:
    """SOL and test tokens from the localnet's faucet; back once both are there."""
    _rpc(client, url, "requestAirdrop", str(buyer.pubkey()), 10**9)
    deadline = time.monotonic() + START_TIMEOUT_S
    while (
        _rpc(client, url, "getBalance", str(buyer.pubkey()))["value"] == 0
        or _token_balance(client, url, buyer.pubkey(), TEST_MINT) == 0
    ):
        if time.monotonic() > deadline:
            raise RuntimeError("the airdrop did not arrive")
        time.sleep(0.05)


def _decode(header: str) -> Any:
    return json.loads(base64.b64decode(header))


def _encode(value: Any) -> str:
    return base64.b64encode(json.dumps(value, separators=(",", ":")).encode()).decode()


class _Buyer:
    """What @x402/fetch + @x402/svm's ExactSvmScheme do for one call, in Python."""

    def __init__(self, keypair: Keypair, ledger_url: str) -> None:
        self.keypair = keypair
        self.ledger_url = ledger_url
        self.rpc = httpx.Client(timeout=30)
        self.http = httpx.Client(timeout=60)
        self.mints: dict[str, tuple[int, Pubkey]] = {}  # the mint cache: decimals, program

    def close(self) -> None:
        self.rpc.close()
        self.http.close()

    def _mint(self, mint: str) -> tuple[int, Pubkey]:
        """The mint's decimals and token program, read once (as the client's mint cache)."""
        if mint not in self.mints:
            info = _rpc(self.rpc, self.ledger_url, "getAccountInfo", mint, {"encoding": "base64"})
            data = base64.b64decode(info["value"]["data"][0])
            # A mint: authority option (36 bytes), supply (8), then decimals.
            self.mints[mint] = data[44], Pubkey.from_string(info["value"]["owner"])
        return self.mints[mint]

    def _blockhash(self, requirements: dict[str, Any]) -> Hash:
        given = requirements.get("extra", {}).get("recentBlockhash")
        if isinstance(given, str) and given:
            return Hash.from_string(given)
        latest = _rpc(self.rpc, self.ledger_url, "getLatestBlockhash")
        return Hash.from_string(latest["value"]["blockhash"])

    def payment(self, required: dict[str, Any]) -> str:
        """The PAYMENT-SIGNATURE header for the first of ``required``'s accepts."""
        req = required["accepts"][0]
        mint, pay_to = Pubkey.from_string(req["asset"]), Pubkey.from_string(req["payTo"])
        decimals, program = self._mint(req["asset"])
        me = self.keypair.pubkey()
        transfer = transfer_checked(
            associated_token_address(me, mint, program),
            mint,
            associated_token_address(pay_to, mint, program),
            me,
            int(req["amount"]),
            decimals,
            program,
        )
        memo = Instruction(MEMO_PROGRAM, secrets.token_hex(16).encode(), [])
        instructions = [
            set_compute_unit_limit(COMPUTE_UNIT_LIMIT),
            set_compute_unit_price(COMPUTE_UNIT_PRICE),
            transfer,
            memo,
        ]
        fee_payer = Pubkey.from_string(req["extra"]["feePayer"])
        message = MessageV0.try_compile(fee_payer, instructions, [], self._blockhash(req))
        signature = self.keypair.sign_message(to_bytes_versioned(message))
        tx = VersionedTransaction.populate(message, [Signature.default(), signature])
        return _encode(
            {
                "x402Version": 2,
                "payload": {"transaction": base64.b64encode(bytes(tx)).decode()},
                "extensions": required.get("extensions"),
                "resource": required.get("resource"),
                "accepted": req,
            }
        )

    def call(self, url: str) -> tuple[float, float, float]:
        """One paid call: the seconds of the 402's round trip, of building the
        payment, and of the paid round trip."""
        started = time.perf_counter()
        unpaid = self.http.post(url, content=INPUT)
        if unpaid.status_code != 402:
            raise RuntimeError(f"a call without payment got {unpaid.status_code}: {unpaid.text}")
        got_402 = time.perf_counter()
        header = self.payment(_decode(unpaid.headers["payment-required"]))
        built = time.perf_counter()
        paid = self.http.post(url, content=INPUT, headers={"PAYMENT-SIGNATURE": header})
        finished = time.perf_counter()
        if paid.status_code != 200 or not _decode(paid.headers["payment-response"])["success"]:
            raise RuntimeError(f"a paid call got {paid.status_code}: {paid.text[:500]}")
        return got_402 - started, built - got_402, finished - built


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _paid_calls(buyer: _Buyer, url: str) -> dict[str, Any]:
    for _ in range(WARM_CALLS):  # connections, the mint's read, the agent's module
        buyer.call(url)
    parts = [buyer.call(url) for _ in range(PAID_CALLS)]
    totals = [sum(p) for p in parts]
    return {
        "paid_call_p50_ms": round(statistics.median(totals) * 1000, 1),
        "paid_call_p99_ms": round(_p(totals, 0.99) * 1000, 1),
        "unpaid_leg_p50_ms": round(statistics.median(p[0] for p in parts) * 1000, 2),
        "build_p50_ms": round(statistics.median(p[1] for p in parts) * 1000, 2),
        "paid_leg_p50_ms": round(statistics.median(p[2] for p in parts) * 1000, 1),
        "paid_calls": PAID_CALLS,
    }


def _official_client(gateway: _Gateway, ledger_url: str, keypair: Keypair) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        return {"official_client": "not run: node is not installed"}
    if not (OFFICIAL_CLIENT / "node_modules" / "@x402" / "fetch").is_dir():
        return {"official_client": "not run: npm ci --prefix tests/clients/x402"}
    config = {
        "gateway": gateway.url,
        "agent": gateway.agent,
        "input": INPUT.decode(),
        "secretKey": list(bytes(keypair)),
        "rpcUrl": ledger_url,
        "calls": OFFICIAL_CALLS,
        # It pays in its default assets only (USDC and the like) unless told which
        # other token it may spend, and how much a call.
        "allowAsset": {
            "network": "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1",  # x402's id of the localnet
            "asset": str(TEST_MINT),
            "maxAmountPerPayment": str(PRICE),
        },
    }
    done = subprocess.run(
        [node, str(OFFICIAL_CLIENT / "pay.mjs"), "-"],
        input=json.dumps(config),
        capture_output=True,
        text=True,
        cwd=OFFICIAL_CLIENT,
        timeout=300,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    failed = [line for line in lines if line.get("status") != 200]
    if done.returncode != 0 or failed or len(lines) != OFFICIAL_CALLS:
        raise RuntimeError(f"the official client failed: {failed or lines}\n{done.stderr[-2000:]}")
    times = [line["ms"] for line in lines[1:]]
    return {
        "official_client_p50_ms": round(statistics.median(times), 1),
        "official_client_calls": len(times),
    }


# -- unpaid calls -----------------------------------------------------------------------------


@dataclass
class _Tally:
    times: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    last_finish: float = 0.0


def _unpaid_request(gateway: _Gateway) -> bytes:
    host = gateway.url.removeprefix("http://")
    head = [
        f"POST /x402/v2/run/{gateway.agent} HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/octet-stream",
        f"Content-Length: {len(INPUT)}",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + INPUT


def _unpaid_client(
    address: tuple[int, Any],
    request: bytes,
    keepalive: bool,
    measure_from: float,
    until: float,
    tally: _Tally,
) -> None:
    conn = _Connection(address, request)
    clock = time.perf_counter
    try:
        while (started := clock()) < until:
            try:
                status, _, body = conn.exchange()
                label = str(status)
                if status == 402 and not json.loads(body).get("accepts"):
                    label = "402 without accepts"
            except (OSError, _BadResponse, ValueError) as exc:
                conn.close()
                label = type(exc).__name__
            if not keepalive:
                conn.close()
            finished = clock()
            if started >= measure_from:
                tally.times.append(finished - started)
                tally.statuses[label] += 1
                tally.last_finish = finished
    finally:
        conn.close()


def _unpaid_load(gateway: _Gateway, keepalive: bool) -> dict[str, Any]:
    host, _, port = gateway.url.removeprefix("http://").rpartition(":")
    address = _address(host, int(port))
    request = _unpaid_request(gateway)
    measure_from = time.perf_counter() + WARMUP_S
    until = measure_from + SECONDS
    tallies = [_Tally() for _ in range(CLIENTS)]
    threads = [
        threading.Thread(
            target=_unpaid_client,
            args=(address, request, keepalive, measure_from, until, tally),
            daemon=True,
        )
        for tally in tallies
    ]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, measure_from - time.perf_counter()))
    gateway_cpu, own_cpu = _tree_cpu_s(gateway.proc.pid), _own_cpu_s()
    time.sleep(max(0.0, until - time.perf_counter()))
    gateway_cpu = _tree_cpu_s(gateway.proc.pid) - gateway_cpu
    own_cpu = _own_cpu_s() - own_cpu
    for thread in threads:
        thread.join(timeout=60)
    times = [t for tally in tallies for t in tally.times]
    statuses: Counter[str] = Counter()
    for tally in tallies:
        statuses.update(tally.statuses)
    wrong = statuses.total() - statuses["402"]
    if not times or wrong > MAX_ERROR_RATIO * len(times):
        raise RuntimeError(f"unpaid calls: {wrong} of {len(times)} not a 402: {dict(statuses)}")
    window = max(tally.last_finish for tally in tallies) - measure_from
    return {
        "per_s": round(statuses["402"] / window),
        "p50_ms": round(statistics.median(times) * 1000, 2),
        "statuses": dict(statuses),
        "gateway_cpu_pct": round(100 * gateway_cpu / SECONDS),
        "client_cpu_pct": round(100 * own_cpu / SECONDS),
    }


# -- the run ----------------------------------------------------------------------------------


def run() -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="mercato-x402-"))
    command = mercato_command()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        localnet, ledger_url = _start_localnet(root, command)
        procs.append(localnet)
        gateway = _start_nodes(root, command, ledger_url, procs)
        keypair = Keypair()
        buyer = _Buyer(keypair, ledger_url)
        try:
            _fund(buyer.rpc, ledger_url, keypair)
            url = f"{gateway.url}/x402/v2/run/{gateway.agent}"
            figures = _paid_calls(buyer, url)
        finally:
            buyer.close()
        figures.update(_official_client(gateway, ledger_url, keypair))
        kept = _unpaid_load(gateway, keepalive=True)
        fresh = _unpaid_load(gateway, keepalive=False)
    finally:
        for proc in reversed(procs):
            _stop(proc)
        shutil.rmtree(root, ignore_errors=True)
    return {
        **figures,
        "unpaid_402_per_s": kept["per_s"],
        "unpaid_402_p50_ms": kept["p50_ms"],
        "unpaid_new_connection_per_s": fresh["per_s"],
        "unpaid_clients": CLIENTS,
        "unpaid_statuses": kept["statuses"],
        "gateway_cpu_pct": kept["gateway_cpu_pct"],
        "client_cpu_pct": kept["client_cpu_pct"],
        "price_base_units": PRICE,
        "targets": {"paid_call_p50_ms": 100, "unpaid_402_per_s": 1000},
    }
