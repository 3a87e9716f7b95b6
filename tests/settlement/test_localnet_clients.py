"""Stock Solana clients against a real `mercato localnet` process, unchanged:
@solana/web3.js 1.x with @solana/spl-token, @solana/kit, and solana-py's
AsyncClient. Each JavaScript script (tests/clients) prints one JSON line per
step and stops at the first failure, with the JSON-RPC exchanges behind it.

The web3.js run pauses in the middle: the localnet is stopped and started again
on the same directory and port, and the script checks that every balance and
token amount survived and sends one more transfer on the same Connection.

The npm tests need `node` and `npm ci --prefix tests/clients`; without them they
skip and say why, except under CI=true, where they fail: CI must run them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message, MessageV0
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import Legacy, VersionedTransaction
from solders.transaction_status import UiRawMessage, UiTransaction

from ..conftest import START_TIMEOUT_S, budget, wait_for

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = ROOT / "tests" / "clients"
SCRIPT_TIMEOUT_S = budget(300.0)
STEP_TIMEOUT_S = budget(60.0)
SOL = 10**9

WEB3JS_STEPS = (
    "connect",
    "airdrop",
    "transfer_1",
    "transfer_2",
    "simulate",
    *(
        f"{program}.{step}"
        for program in ("token", "token2022")
        for step in ("create_mint", "create_ata", "mint_to", "transfer_checked")
    ),
    "v0_transfer",
    "lookup_table.create",
    "lookup_table.v0_transfer",
    "get_transaction",
    "get_transactions_batch",
    "block",
    "cluster_reads",
    "get_signatures_for_address",
    "token_accounts_by_owner",
    "before_restart",
    "pause",
    "after_restart",
    "transfer_after_restart",
    "done",
)
KIT_STEPS = (
    "kit.connect",
    "kit.slot_subscription",
    "kit.airdrop",
    "kit.transfer_with_account_subscription",
    "kit.signature_subscription",
    "kit.get_transaction",
    "done",
)


def free_port_pair() -> int:
    """A port P with P and P + 1 both free on loopback (the localnet's HTTP and
    WebSocket ports): fixed, so that a restarted localnet serves the same URLs."""
    for _ in range(100):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise AssertionError("no two consecutive free ports on loopback")


class Localnet:
    """A `mercato localnet` process on a fixed port, which can be stopped and started
    again on the same directory and port."""

    def __init__(self, directory: Path, logs: Path, port: int) -> None:
        self.directory, self.logs, self.port = directory, logs, port
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port + 1}"

    @property
    def log_path(self) -> Path:
        return self.logs / f"localnet-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        url_file = self.directory / "url"
        url_file.unlink(missing_ok=True)  # a killed localnet leaves its last one
        command = [sys.executable, "-m", "mercato.cli", "localnet", "--dir", str(self.directory)]
        with self.log_path.open("w") as log:
            proc = subprocess.Popen(
                [*command, "--port", str(self.port)], stdout=log, stderr=subprocess.STDOUT
            )
        self.proc = proc

        def serving() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the localnet exited: {self.log_path.read_text()}")
            return url_file.exists() and url_file.read_text().strip() == self.url

        wait_for(serving, START_TIMEOUT_S, "the localnet")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(timeout=budget(15)) == 0, self.log()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log(self, chars: int = 4000) -> str:
        texts = [
            f"-- localnet-{i}.log --\n{(self.logs / f'localnet-{i}.log').read_text()[-chars:]}"
            for i in range(1, self.starts + 1)
            if (self.logs / f"localnet-{i}.log").exists()
        ]
        return "\n".join(texts)


@pytest.fixture
def localnet(tmp_path: Path) -> Iterator[Localnet]:
    net = Localnet(tmp_path / "localnet", tmp_path, free_port_pair())
    net.start()
    try:
        yield net
    finally:
        net.kill()


@pytest.fixture
def node() -> str:
    """The `node` to run tests/clients with; skips (fails under CI=true) without it
    or without the clients installed. Asked for before the localnet starts."""
    found = shutil.which("node")
    why = ""
    if found is None:
        why = "node is not installed: the tests with the Solana JS clients need Node 20 and npm"
    elif not (CLIENTS / "node_modules").is_dir():
        why = "tests/clients/node_modules is absent: run `npm ci --prefix tests/clients`"
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(why + "; on CI they must run", pytrace=False)
        pytest.skip(why)
    assert found is not None
    return found


def run_client(
    node: str, script: str, *args: str, on_pause: Callable[[], None] | None = None
) -> tuple[list[dict[str, Any]], int, str]:
    """Run ``node tests/clients/SCRIPT ARGS``: its steps (one JSON object a line),
    exit status and stderr. On ``{"step": "pause"}``, ``on_pause()``, then a line
    to its stdin."""
    command = [node, str(CLIENTS / script), *args]
    steps: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryFile("w+") as stderr,
        subprocess.Popen(
            [*command, f"--step-timeout={STEP_TIMEOUT_S:.0f}"],
            cwd=CLIENTS,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        ) as proc,
    ):
        assert proc.stdin is not None and proc.stdout is not None
        watchdog = threading.Timer(SCRIPT_TIMEOUT_S, proc.kill)
        watchdog.start()
        try:
            for line in proc.stdout:
                if not line.startswith("{"):
                    continue
                steps.append(json.loads(line))
                if steps[-1]["step"] == "pause":
                    if on_pause is not None:
                        on_pause()
                    proc.stdin.write("go on\n")
                    proc.stdin.flush()
            code = proc.wait(timeout=10)
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stderr.seek(0)
        return steps, code, collapsed(stderr.read())


def collapsed(text: str) -> str:
    """``text`` with runs of one repeated line (a websocket retrying) shown once, counted."""
    lines: list[str] = []
    for line, run in itertools.groupby(text.splitlines()):
        count = len(list(run))
        lines.append(line if count == 1 else f"{line} (x{count})")
    return "\n".join(lines)


def assert_steps(
    steps: list[dict[str, Any]], expected: tuple[str, ...], code: int, stderr: str, net: Localnet
) -> dict[str, dict[str, Any]]:
    """Every expected step ran and passed; each by name."""
    by_name = {s["step"]: s for s in steps}
    failed = [s for s in steps if s.get("ok") is False]
    missing = [name for name in expected if name not in by_name]
    if code != 0 or failed or missing:
        report = "\n".join(json.dumps(s, indent=1) for s in failed)
        raise AssertionError(
            f"exit {code}; failed: {[s['step'] for s in failed]}; not run: {missing}\n"
            f"{report}\n-- stderr --\n{stderr[-3000:]}\n{net.log()}"
        )
    return by_name


@pytest.mark.slow
def test_web3js_and_spl_token_work_unchanged_and_survive_a_restart(
    node: str, localnet: Localnet
) -> None:
    def restart() -> None:
        localnet.stop()
        localnet.start()

    steps, code, stderr = run_client(node, "web3js.mjs", localnet.url, "--pause", on_pause=restart)
    by_name = assert_steps(steps, WEB3JS_STEPS, code, stderr, localnet)
    assert localnet.starts == 2
    # sendAndConfirmTransaction's second call took web3.js's cached blockhash.
    assert by_name["transfer_2"]["reused_blockhash"] is True
    assert by_name["after_restart"]["recipient"] == by_name["before_restart"]["recipient"]
    assert by_name["after_restart"]["token.destination"] == "250000000"
    assert by_name["after_restart"]["token2022.destination"] == "250000000"


@pytest.mark.slow
def test_kit_sends_confirms_and_subscribes(node: str, localnet: Localnet) -> None:
    steps, code, stderr = run_client(node, "kit.mjs", localnet.url, localnet.ws_url)
    by_name = assert_steps(steps, KIT_STEPS, code, stderr, localnet)
    slots = by_name["kit.slot_subscription"]["slots"]
    assert slots == sorted(slots) and slots[-1] > slots[0]


async def _solana_py(url: str, steps: list[str]) -> dict[str, Any]:
    """solana-py's AsyncClient the documented way: airdrop and confirm, two
    transfers on one blockhash (a legacy and a version-0 one), get_transaction.
    Each step's name goes to ``steps`` as it begins."""
    payer, recipient = Keypair(), Keypair()
    figures: dict[str, Any] = {}
    async with AsyncClient(url, commitment=Confirmed, timeout=30) as client:
        steps.append("is_connected")
        assert await client.is_connected()
        steps.append("airdrop")
        airdrop = (await client.request_airdrop(payer.pubkey(), 10 * SOL)).value
        latest = (await client.get_latest_blockhash()).value
        await client.confirm_transaction(
            airdrop,
            Confirmed,
            sleep_seconds=0.1,
            last_valid_block_height=latest.last_valid_block_height,
        )
        assert (await client.get_balance(payer.pubkey())).value == 10 * SOL

        def transfer_tx(lamports: int, blockhash: Hash, v0: bool) -> VersionedTransaction:
            ix = transfer(
                TransferParams(
                    from_pubkey=payer.pubkey(), to_pubkey=recipient.pubkey(), lamports=lamports
                )
            )
            if v0:
                message = MessageV0.try_compile(payer.pubkey(), [ix], [], blockhash)
                return VersionedTransaction(message, [payer])
            return VersionedTransaction(
                Message.new_with_blockhash([ix], payer.pubkey(), blockhash), [payer]
            )

        latest = (await client.get_latest_blockhash()).value
        signatures: list[Signature] = []
        for lamports, v0 in ((SOL, False), (SOL // 2, True)):  # one blockhash for both
            steps.append(f"transfer {'v0' if v0 else 'legacy'}")
            tx = transfer_tx(lamports, latest.blockhash, v0)
            signature = (await client.send_transaction(tx)).value
            assert signature == tx.signatures[0]
            await client.confirm_transaction(
                signature,
                Confirmed,
                sleep_seconds=0.1,
                last_valid_block_height=latest.last_valid_block_height,
            )
            signatures.append(signature)
        assert (await client.get_balance(recipient.pubkey())).value == SOL + SOL // 2
        for signature, version in zip(signatures, (Legacy.Legacy, 0), strict=True):
            steps.append(f"get_transaction {version}")
            found = (
                await client.get_transaction(signature, max_supported_transaction_version=0)
            ).value
            assert found is not None, f"get_transaction({signature}) found nothing"
            assert found.slot > 0
            assert found.transaction.version == version
            meta = found.transaction.meta
            assert meta is not None and meta.err is None
            shown = found.transaction.transaction
            assert isinstance(shown, UiTransaction), shown
            assert isinstance(shown.message, UiRawMessage), shown
            assert shown.signatures == [signature]
            keys = shown.message.account_keys
            assert recipient.pubkey() in keys
            index = keys.index(recipient.pubkey())
            assert meta.post_balances[index] - meta.pre_balances[index] in (SOL, SOL // 2)
            figures[f"slot_{version}"] = found.slot
    return figures


@pytest.mark.slow
def test_solana_py_async_client_airdrops_confirms_transfers_and_reads_back(
    localnet: Localnet,
) -> None:
    steps: list[str] = []
    try:
        figures = asyncio.run(asyncio.wait_for(_solana_py(localnet.url, steps), SCRIPT_TIMEOUT_S))
    except Exception as exc:
        raise AssertionError(
            f"at {steps[-1] if steps else 'the start'}: {type(exc).__name__}: {exc!r}\n"
            f"{localnet.log()}"
        ) from exc
    assert figures["slot_0"] >= figures[f"slot_{Legacy.Legacy}"]
