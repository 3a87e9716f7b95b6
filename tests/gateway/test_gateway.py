"""The x402 gateway in process: a node serving a priced agent on an embedded ledger
(it has the test mint), a buyer's keypair the faucet funded with test tokens, and
payments built as the official client builds them (compute limit, compute price,
TransferChecked, memo; version 0; the fee payer's signature left empty).

The creator is another account key of the same node: it publishes the listing,
so its royalty is forwarded to another wallet than the provider's. Every bad
payment is refused with nothing run (the provider's served count) and nothing
settled (the token balances). The official client's own test, on real
daemons and a localnet, is test_x402_official_client.py.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import secrets
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from mercato.node import Config, DataDir, Node, init_data_dir
from mercato.node.gateway import GatewayApp, GatewayRefused
from mercato.node.gateway import _book as book
from mercato.node.tasks import Receipt
from mercato.settlement import (
    MEMO_PROGRAM,
    TEST_MINT,
    TOKEN_PROGRAM,
    EmbeddedLedger,
    LedgerError,
    LedgerUnreachable,
    associated_token_address,
    check_exact_payment,
    cosign_payment,
    ensure_test_mint,
    fund_tokens,
    open_embedded_ledger,
    token_balance,
    transfer_checked,
)

from ..conftest import budget
from ..node.test_tasks import EXAMPLES, LISTING, until

PRICE = 250_000  # lamports in the listing: base units of the test mint at the gateway
ROYALTY_BPS = 1000  # 10 %
ROYALTY = PRICE * ROYALTY_BPS // 10_000
DEVNET = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1"
TEXT = b"three little words"


class Outage:
    """A fake: the shop's real embedded ledger behind an outage that cannot be made
    to happen on demand here (a cluster's RPC that times out or answers 429).
    While ``down``, what is sent reaches the ledger (if ``delivers``) but no
    answer comes back, and whether a transaction
    landed cannot be asked; whether a blockhash expired still can. While
    ``blind``, it cannot say whether a blockhash expired, nor that it never saw a
    signature (None, as an RPC, rather than the embedded ledger's False)."""

    def __init__(self, inner: EmbeddedLedger) -> None:
        self.inner = inner
        self.down = False
        self.delivers = True
        self.blind = False
        self.asked: Counter[Pubkey] = Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def send(self, tx: Any) -> str:
        if not self.down:
            return await self.inner.send(tx)
        if self.delivers:
            with contextlib.suppress(LedgerError):
                await self.inner.send(tx)
        raise LedgerUnreachable("the ledger did not answer (a test's outage)")

    async def landed(self, signature: str) -> bool | None:
        if self.down:
            raise LedgerUnreachable("the ledger did not answer (a test's outage)")
        landed = await self.inner.landed(signature)
        return None if self.blind and not landed else landed

    async def blockhash_expired(self, blockhash: Hash) -> bool | None:
        return None if self.blind else await self.inner.blockhash_expired(blockhash)

    async def account(self, pubkey: Pubkey) -> Any:
        self.asked[pubkey] += 1
        return await self.inner.account(pubkey)


@dataclass
class Shop:
    node: Node
    ledger: EmbeddedLedger
    url: str
    agent: str
    creator: Pubkey
    provider: Pubkey
    buyer: Keypair
    http: httpx.AsyncClient
    outage: Outage

    @property
    def gateway(self) -> Any:
        assert self.node.gateway is not None
        return self.node.gateway

    async def balances(self) -> dict[str, int]:
        found = {}
        for who, key in (("creator", self.creator), ("provider", self.provider),
                         ("buyer", self.buyer.pubkey())):  # fmt: skip
            held = await token_balance(self.ledger, key, TEST_MINT)
            found[who] = held.amount if held else 0
        return found

    @property
    def served(self) -> int:
        return self.node.tasks.served

    async def required(self) -> dict[str, Any]:
        answer = await self.http.post(f"{self.url}/x402/v2/run/{self.agent}", content=TEXT)
        assert answer.status_code == 402, answer.text
        return json.loads(base64.b64decode(answer.headers["payment-required"]))

    async def pay(self, header: str | None, body: bytes = TEXT) -> httpx.Response:
        headers = {"PAYMENT-SIGNATURE": header} if header is not None else {}
        return await self.http.post(
            f"{self.url}/x402/v2/run/{self.agent}", content=body, headers=headers
        )


async def open_shop(tmp_path: Path, **gateway: Any) -> AsyncIterator[Shop]:
    config = (
        Config()
        .replace("api", port=0)
        .replace("p2p", listen=("/ip4/127.0.0.1/tcp/0",), mdns=False, target_peers=0)
        .replace("builds", min_copies=0)
        .replace("gateway", listen="127.0.0.1:0", **gateway)
    )
    datadir = DataDir(tmp_path / "provider")
    await trio.to_thread.run_sync(init_data_dir, datadir)
    async with (
        open_embedded_ledger(tmp_path / "ledger.db") as ledger,
        trio.open_nursery() as nursery,
    ):
        await ensure_test_mint(ledger)
        outage = Outage(ledger)
        node = Node(datadir, config, ledger=outage)  # type: ignore[arg-type]
        await nursery.start(node.run)
        # The creator is another account of this node: its wallet is not the provider's.
        await trio.to_thread.run_sync(node.keys.create_account, "creator")
        listing = {**LISTING, "name": "wc", "price": PRICE, "royalty_bps": ROYALTY_BPS}
        publisher = (await node.registry.publish("creator", listing))["publisher"]
        wasm = EXAMPLES / "wordcount" / "wordcount.wasm"
        await node.api.registry.release("creator", {"name": "wc", "version": "1.0.0"}, wasm)
        agent = f"{publisher}/wc"
        node.tasks.serve_agents((agent,))
        buyer = Keypair()
        await fund_tokens(ledger, buyer.pubkey(), 10 * PRICE)
        async with httpx.AsyncClient(timeout=budget(30)) as http:
            yield Shop(
                node, ledger, node.gateway_url, agent, Pubkey.from_string(publisher),
                Pubkey.from_string(node.settlement.address), buyer, http, outage,
            )  # fmt: skip
        node.request_stop()


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[Shop]:
    async for opened in open_shop(tmp_path):
        yield opened


# Payments as @x402/svm's ExactSvmScheme.createPaymentPayload builds them.


def payment_transaction(
    shop: Shop,
    accepted: dict[str, Any],
    *,
    amount: int | None = None,
    pay_to: Pubkey | None = None,
    mint: Pubkey | None = None,
    fee_payer: Pubkey | None = None,
    extra: list[Instruction] | None = None,
    blockhash: Hash | None = None,
) -> VersionedTransaction:
    buyer = shop.buyer.pubkey()
    mint = mint or Pubkey.from_string(accepted["asset"])
    owner = pay_to or Pubkey.from_string(accepted["payTo"])
    instructions = [
        set_compute_unit_limit(20_000),
        set_compute_unit_price(1),
        transfer_checked(
            associated_token_address(buyer, mint, TOKEN_PROGRAM),
            mint,
            associated_token_address(owner, mint, TOKEN_PROGRAM),
            buyer,
            int(accepted["amount"]) if amount is None else amount,
            6,
            TOKEN_PROGRAM,
        ),
        Instruction(MEMO_PROGRAM, secrets.token_hex(16).encode(), []),
        *(extra or []),
    ]
    payer = fee_payer or Pubkey.from_string(accepted["extra"]["feePayer"])
    recent = blockhash or Hash.from_string(accepted["extra"]["recentBlockhash"])
    message = MessageV0.try_compile(payer, instructions, [], recent)
    signed = to_bytes_versioned(message)
    signers = message.account_keys[: message.header.num_required_signatures]
    signatures = [
        shop.buyer.sign_message(signed) if key == buyer else Signature.default() for key in signers
    ]
    return VersionedTransaction.populate(message, signatures)


def header_for(accepted: dict[str, Any], tx: VersionedTransaction, **changes: Any) -> str:
    payload = {
        "x402Version": 2,
        "accepted": accepted,
        "payload": {"transaction": base64.b64encode(bytes(tx)).decode()},
        **changes,
    }
    return base64.b64encode(json.dumps(payload).encode()).decode()


async def pay_header(shop: Shop, **changes: Any) -> str:
    """A fresh 402's requirements, paid (with ``changes`` to the transaction)."""
    accepted = (await shop.required())["accepts"][0]
    return header_for(accepted, payment_transaction(shop, accepted, **changes))


def decoded(value: str) -> dict[str, Any]:
    return json.loads(base64.b64decode(value))


async def test_a_call_without_payment_gets_the_requirements_in_the_official_shape(
    shop: Shop,
) -> None:
    listed = await shop.http.get(f"{shop.url}/x402/v2/agents")
    assert listed.status_code == 200
    (entry,) = listed.json()["agents"]
    assert entry["agent"] == shop.agent and entry["title"] == LISTING["title"]
    assert entry["price"] == {"amount": str(PRICE), "asset": str(TEST_MINT), "network": DEVNET}
    assert entry["url"] == f"{shop.url}/x402/v2/run/{shop.agent}"

    answer = await shop.http.post(entry["url"], content=TEXT)
    assert answer.status_code == 402
    required = decoded(answer.headers["payment-required"])
    assert answer.json() == required
    assert answer.headers["cache-control"] == "no-store"
    assert "PAYMENT-REQUIRED" in answer.headers["access-control-expose-headers"]
    # @x402/core 2.27's PaymentRequiredV2Schema, field by field.
    assert required["x402Version"] == 2 and isinstance(required["error"], str)
    assert required["resource"]["url"] == entry["url"]
    assert required["resource"]["mimeType"] == "application/json"
    (accepted,) = required["accepts"]
    assert accepted["scheme"] == "exact" and accepted["network"] == DEVNET
    assert accepted["amount"] == str(PRICE) and accepted["asset"] == str(TEST_MINT)
    assert accepted["payTo"] == str(shop.provider)
    assert accepted["maxTimeoutSeconds"] == 60
    assert accepted["extra"]["feePayer"] == str(shop.provider)
    assert accepted["extra"]["recentBlockhash"] == str(await shop.ledger.blockhash())
    assert shop.served == 0


async def test_a_paid_call_runs_settles_and_forwards_the_royalty(shop: Shop) -> None:
    before = await shop.balances()
    header = await pay_header(shop)
    answer = await shop.pay(header)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert json.loads(body["output"]["text"])["words"] == 3
    assert base64.b64decode(body["output"]["base64"]) == body["output"]["text"].encode()

    settled = decoded(answer.headers["payment-response"])
    assert settled == {
        "success": True,
        "transaction": settled["transaction"],
        "network": DEVNET,
        "payer": str(shop.buyer.pubkey()),
    }
    assert await shop.ledger.landed(settled["transaction"])
    receipt = Receipt.verify(base64.b64decode(body["receipt"]["signed"]))
    assert receipt.provider == shop.node.peer_id and receipt.outcome == "ok"
    assert receipt.user == f"x402:{shop.buyer.pubkey()}"
    assert receipt.channel == f"x402:{settled['transaction']}"
    assert receipt.cumulative == PRICE and receipt.price == PRICE  # 1 base unit a lamport
    assert receipt.agent == shop.agent and body["receipt"]["user"] == receipt.user
    assert shop.served == 1

    gateway = shop.node.gateway
    assert gateway is not None

    async def forwarded() -> bool:
        return await gateway.owed() == 0 and gateway.forwarded == 1

    await until(forwarded, budget(10), "the royalty's forward")
    after = await shop.balances()
    assert after["buyer"] == before["buyer"] - PRICE
    assert after["provider"] == before["provider"] + PRICE - ROYALTY
    assert after["creator"] == before["creator"] + ROYALTY
    kinds = [e.kind for e in await shop.node.store.run(_events, shop.node)]
    assert "gateway.settled" in kinds and "gateway.forwarded" in kinds

    # The same payment again is a replay: refused, nothing run, nothing paid.
    again = await shop.pay(header)
    assert again.status_code == 402 and again.json()["error"] == "duplicate_settlement"
    assert decoded(again.headers["payment-required"])["error"] == "duplicate_settlement"
    assert shop.served == 1 and await shop.balances() == after


def _events(node: Node) -> list[Any]:
    from mercato.node._events import list_events

    return list_events(node.store.db, 0, 1000)


async def test_every_bad_payment_is_refused_with_nothing_run_or_paid(shop: Shop) -> None:
    before = await shop.balances()
    stranger = Keypair().pubkey()
    other_mint = Keypair().pubkey()
    lamports = Instruction(
        Pubkey.from_string("11111111111111111111111111111111"),
        bytes([2, 0, 0, 0]) + (1000).to_bytes(8, "little"),
        [AccountMeta(shop.buyer.pubkey(), True, True), AccountMeta(stranger, False, True)],
    )
    cases = {
        "short": ({"amount": PRICE - 1}, "invalid_exact_svm_payload_amount_mismatch"),
        "elsewhere": ({"pay_to": stranger}, "invalid_exact_svm_payload_recipient_mismatch"),
        "other mint": ({"mint": other_mint}, "invalid_exact_svm_payload_mint_mismatch"),
        "extra instruction": (
            {"extra": [lamports]},
            "invalid_exact_svm_payload_unknown_fifth_instruction",
        ),
        "other fee payer": ({"fee_payer": stranger}, "invalid_exact_svm_fee_payer_mismatch"),
    }
    for case, (changes, reason) in cases.items():
        answer = await shop.pay(await pay_header(shop, **changes))
        assert answer.status_code == 402, case
        assert answer.json()["error"] == reason, (case, answer.json())
        assert decoded(answer.headers["payment-required"])["accepts"], case

    # Accepted requirements other than this node's (a lower amount, another payTo).
    required = await shop.required()
    accepted = required["accepts"][0]
    for changed in ({"amount": "1"}, {"payTo": str(stranger)}, {"network": "solana:other"}):
        lowered = {**accepted, **changed}
        header = header_for(lowered, payment_transaction(shop, accepted))
        answer = await shop.pay(header)
        assert answer.json()["error"] == "invalid_payment_requirements", changed

    # An expired blockhash: any transaction since moves the embedded ledger past it.
    stale = await pay_header(shop)
    await fund_tokens(shop.ledger, Keypair().pubkey(), 1)
    answer = await shop.pay(stale)
    assert answer.status_code == 402
    assert answer.json()["error"] == "invalid_exact_svm_transaction_simulation_failed"

    # Malformed headers, another x402 version; JSON nested too deep for the parser
    # (4,000 levels), or deep enough to overflow whatever walks it after (900).
    def nested(depth: int) -> str:
        deep = b"[" * depth + b"]" * depth
        payload = b'"payload": {"transaction": "AA=="}'
        return base64.b64encode(
            b'{"x402Version": 2, "accepted": {"scheme": ' + deep + b"}, " + payload + b"}"
        ).decode()

    for bad, reason in (
        ("not base64!", "invalid_payload"),
        (base64.b64encode(b"[1, 2]").decode(), "invalid_payload"),
        (base64.b64encode(b'{"x402Version": 2}').decode(), "invalid_payload"),
        (base64.b64encode(b'{"x402Version": 1, "payload": {}}').decode(), "invalid_x402_version"),
        (nested(4000), "invalid_payload"),
        (nested(900), "invalid_payload"),
    ):
        answer = await shop.pay(bad)
        assert (answer.status_code, answer.json()["error"]) == (402, reason), bad

    # A buyer who cannot pay: the simulation says so before anything runs.
    poor = Keypair()
    shop.buyer, rich = poor, shop.buyer
    answer = await shop.pay(await pay_header(shop))
    shop.buyer = rich
    assert answer.json()["error"] == "invalid_exact_svm_transaction_simulation_failed"

    # An agent this node does not serve, an oversized body.
    answer = await shop.http.post(f"{shop.url}/x402/v2/run/{stranger}/wc", content=TEXT)
    assert answer.status_code == 404 and answer.json()["error"] == "not_found"
    big = b"x" * (8 * 1024 * 1024 + 1)
    answer = await shop.pay(await pay_header(shop), body=big)
    assert answer.status_code == 413 and answer.json()["error"] == "body_too_large"

    assert shop.served == 0
    assert await shop.balances() == before
    assert shop.node.gateway is not None and shop.node.gateway.settled == 0


async def test_a_failed_run_settles_nothing_and_frees_the_payment(shop: Shop) -> None:
    # The same agent at the same price, with too little fuel to finish any run.
    starved = {**LISTING, "name": "starved", "price": PRICE, "royalty_bps": ROYALTY_BPS,
               "limits": {"fuel": 1}}  # fmt: skip
    await shop.node.registry.publish("creator", starved)
    wasm = EXAMPLES / "wordcount" / "wordcount.wasm"
    await shop.node.api.registry.release("creator", {"name": "starved", "version": "1.0.0"}, wasm)
    fed, shop.agent = shop.agent, f"{shop.creator}/starved"
    shop.node.tasks.serve_agents((fed, shop.agent))
    before = await shop.balances()
    header = await pay_header(shop)
    answer = await shop.pay(header)
    assert answer.status_code == 422, answer.text
    refused = answer.json()
    assert refused["error"] == "run_failed" and refused["outcome"] == "out_of_fuel"
    assert Receipt.verify(base64.b64decode(refused["receipt"]["signed"])).outcome == "out_of_fuel"
    assert "payment-response" not in answer.headers
    assert await shop.balances() == before and shop.served == 1
    # The payment was not used: the same one pays for a run that answers.
    shop.agent = fed
    answer = await shop.pay(header)
    assert answer.status_code == 200, answer.text
    assert (await shop.balances())["buyer"] == before["buyer"] - PRICE


async def test_the_same_payment_twice_at_once_runs_and_pays_once(shop: Shop) -> None:
    before = await shop.balances()
    header = await pay_header(shop)
    answers: list[httpx.Response] = []

    async def pay() -> None:
        answers.append(await shop.pay(header))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pay)
        nursery.start_soon(pay)
    assert sorted(a.status_code for a in answers) == [200, 402]
    assert [a.json()["error"] for a in answers if a.status_code == 402] == ["duplicate_settlement"]
    assert shop.served == 1
    assert (await shop.balances())["buyer"] == before["buyer"] - PRICE


async def test_what_a_crash_left_is_settled_or_freed_and_royalties_are_never_lost(
    shop: Shop,
) -> None:
    """The forwarder's rounds, called here one by one: a payment that landed before
    the node could record it is settled and its royalty forwarded; one that never
    landed is freed; a forward the ledger refuses stays owed until it lands."""
    gateway = shop.node.gateway
    assert gateway is not None
    db = shop.node.store.db
    priced = await gateway.priced(shop.agent)
    req = priced.requirements
    assert req is not None
    wallet = shop.node.settlement.wallet
    before = await shop.balances()

    def claimed(tx: VersionedTransaction) -> tuple[book.PaymentRow, VersionedTransaction]:
        checked = check_exact_payment(base64.b64encode(bytes(tx)).decode(), req)
        cosigned = cosign_payment(checked, wallet)
        row = book.PaymentRow(
            checked.message_hash, str(cosigned.signatures[0]), str(checked.payer), shop.agent,
            str(req.asset), req.amount, str(shop.creator), ROYALTY,
            str(cosigned.message.recent_blockhash), created=time.time(),
        )  # fmt: skip
        assert book.claim(db, row)
        return row, cosigned

    accepted = (await shop.required())["accepts"][0]
    landed, cosigned = await shop.node.store.run(claimed, payment_transaction(shop, accepted))
    await shop.ledger.send(cosigned)  # sent, then the node crashed before it recorded it
    accepted = (await shop.required())["accepts"][0]
    lost, _ = await shop.node.store.run(claimed, payment_transaction(shop, accepted))
    # A royalty larger than what the provider holds (its faucet grant and the payment
    # that landed): the forward fails until it holds enough.
    too_much = (await shop.balances())["provider"] + 1
    big = book.PaymentRow(
        "f" * 64, "1" * 64, "someone", shop.agent, str(req.asset), 0, str(shop.creator),
        too_much, str(Hash.default()), created=time.time(),
    )  # fmt: skip
    await shop.node.store.run(book.claim, db, big)
    await shop.node.store.run(book.mark, db, big.message, "settled")

    await gateway._forward_due()
    assert await shop.node.store.run(book.unresolved, db) == []  # one settled, one freed
    assert gateway.settled == 1 and gateway.forwarded == 0
    assert await gateway.owed() == ROYALTY + too_much  # the forward failed: still owed
    await gateway._forward_due()
    assert await gateway.owed() == ROYALTY + too_much

    await fund_tokens(shop.ledger, shop.provider, too_much)
    await gateway._forward_due()
    assert await gateway.owed() == 0 and gateway.forwarded == 1
    after = await shop.balances()
    assert after["buyer"] == before["buyer"] - PRICE  # the lost payment cost nothing
    assert after["creator"] == before["creator"] + ROYALTY + too_much
    assert after["provider"] == before["provider"] + PRICE - ROYALTY
    # The payment that landed is a replay if it comes again (as its buyer signed it).
    signed = [Signature.default(), *cosigned.signatures[1:]]
    replay = header_for(accepted, VersionedTransaction.populate(cosigned.message, signed))
    answer = await shop.pay(replay)
    assert (answer.status_code, answer.json()["error"]) == (402, "duplicate_settlement")
    assert landed.status == "claimed" and lost.message != landed.message


async def test_the_control_api_is_never_reachable_through_the_gateway(shop: Shop) -> None:
    token = shop.node.datadir.token_file.read_text().strip()
    auth = {"Authorization": f"Bearer {token}"}
    for method, path in (
        ("GET", "/v1/health"),
        ("GET", "/v1/node/status"),
        ("POST", "/v1/shutdown"),
        ("GET", "/mcp"),
        ("POST", "/mcp"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("GET", "/metrics"),
        ("GET", "/"),
        ("GET", "/market"),
    ):
        answer = await shop.http.request(method, f"{shop.url}{path}", headers=auth)
        assert answer.status_code == 404, path
        assert answer.json()["error"] == "not_found"
    answer = await shop.http.get(f"{shop.url}/x402/v2/run/{shop.agent}")
    assert answer.status_code == 405 and answer.headers["allow"] == "POST"
    assert shop.node.started_at  # still running: no shutdown went through


async def test_a_paid_call_completes_under_200_concurrent_unpaid_ones(shop: Shop) -> None:
    header = await pay_header(shop)
    statuses: list[int] = []
    paid: list[httpx.Response] = []
    limits = httpx.Limits(max_connections=300)
    async with httpx.AsyncClient(timeout=budget(60), limits=limits) as flood:

        async def unpaid() -> None:
            answer = await flood.post(f"{shop.url}/x402/v2/run/{shop.agent}", content=TEXT)
            statuses.append(answer.status_code)

        async def pay() -> None:
            paid.append(await shop.pay(header))

        with trio.fail_after(budget(60)):
            async with trio.open_nursery() as nursery:
                for _ in range(200):
                    nursery.start_soon(unpaid)
                nursery.start_soon(pay)
    assert statuses == [402] * 200
    assert paid[0].status_code == 200, paid[0].text


async def test_a_free_agent_runs_without_payment(tmp_path: Path) -> None:
    async for shop in open_shop(tmp_path, units_per_lamport=0.000001):
        # 250,000 lamports at 1e-6 base units a lamport: a price of 1 (rounded up).
        required = await shop.required()
        assert required["accepts"][0]["amount"] == "1"
        answer = await shop.pay(await pay_header(shop))
        assert answer.status_code == 200, answer.text
        assert decoded(answer.headers["payment-response"])["success"]


async def test_rate_limits_and_slow_bodies() -> None:
    app = GatewayApp(Config().gateway.__class__(rate_per_min=3), body_timeout=0.2)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        for _ in range(3):
            assert (await client.get("/x402/v2/agents")).status_code == 503  # no service
        limited = await client.get("/x402/v2/agents")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert limited.json()["error"] == "rate_limited"

    other = GatewayApp(Config().gateway, body_timeout=0.2)

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"a"
        await trio.sleep(5)
        yield b"b"

    transport = httpx.ASGITransport(app=other, client=("203.0.113.8", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        # A payment: the body is read (a call without one is answered from its head).
        paying = {"PAYMENT-SIGNATURE": "eA=="}
        answer = await client.post("/x402/v2/run/a/b", content=slow_body(), headers=paying)
        assert answer.status_code == 408 and answer.json()["error"] == "timeout"


@pytest.mark.slow
async def test_an_idle_connection_is_dropped(shop: Shop) -> None:
    host, port = shop.url.removeprefix("http://").rsplit(":", 1)
    started = trio.current_time()

    def silent() -> bytes:
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(b"POST /x402/v2/run/a/b HTTP/1.1\r\nHost: x\r\n")  # never ends
            return sock.recv(100)

    assert await trio.to_thread.run_sync(silent) == b""
    assert trio.current_time() - started < budget(10)


def test_the_gateway_configuration_is_checked(tmp_path: Path) -> None:
    from mercato.node import ConfigError, load_config
    from mercato.node.gateway import MAINNET, default_network

    on = Config().replace("gateway", listen="0.0.0.0:8402")
    assert on.gateway.listen == "0.0.0.0:8402" and Config().gateway.listen == ""
    for changes in (
        {"listen": "8402"},
        {"listen": "0.0.0.0:99999"},
        {"asset": "not a mint"},
        {"network": "devnet"},
        {"units_per_lamport": 0.0},
        {"rate_per_min": 0},
        {"max_body_mb": 0},
        {"max_timeout_s": 61},  # past a blockhash's life
        {"max_timeout_s": 3600},
    ):
        with pytest.raises(ConfigError, match="gateway"):
            Config().replace("gateway", **changes)
    with pytest.raises(ConfigError, match="relay"):
        on.replace("node", role="relay")
    with pytest.raises(ConfigError, match=r"gateway\.asset"):  # a cluster has no test mint
        on.replace("settlement", ledger="rpc")
    usdc = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
    mainnet = on.replace("gateway", asset=usdc).replace(
        "settlement", ledger="rpc", rpc_url="https://api.mainnet-beta.solana.com"
    )
    assert default_network(mainnet.settlement) == MAINNET
    assert default_network(Config().settlement) == DEVNET
    environ = {"MERCATO_GATEWAY_LISTEN": "127.0.0.1:8402", "MERCATO_GATEWAY_RATE_PER_MIN": "60"}
    loaded = load_config(tmp_path / "absent.toml", environ)
    assert (loaded.gateway.listen, loaded.gateway.rate_per_min) == ("127.0.0.1:8402", 60)


# The reviewer's findings: settlement the ledger cannot confirm, fees, sources,
# long runs, bodies.


async def test_no_output_leaves_before_the_ledger_has_the_payment(shop: Shop) -> None:
    """The payment reaches the ledger but no answer comes back: 202 with nothing of
    the run; the same payment again gets the run's answer once the ledger shows
    it landed, as often as it is asked, and the royalty is forwarded once."""
    gateway = shop.gateway
    gateway.settle_timeout = 0.5
    before = await shop.balances()
    header = await pay_header(shop)
    shop.outage.down = True
    answer = await shop.pay(header)
    assert answer.status_code == 202, answer.text
    pending = answer.json()
    assert pending["error"] == "settlement_pending"
    assert "output" not in pending and "receipt" not in pending
    settle = decoded(answer.headers["payment-response"])
    assert (settle["success"], settle["errorReason"]) == (False, "settlement_pending")
    assert pending["payment"]["transaction"] == settle["transaction"]
    assert (await shop.balances())["buyer"] == before["buyer"] - PRICE  # it did land
    assert shop.served == 1

    # While the ledger cannot say: still 202, nothing runs again, nothing released.
    again = await shop.pay(header)
    assert again.status_code == 202 and "output" not in again.json()
    await gateway._forward_due()
    rows = await shop.node.store.run(book.unresolved, shop.node.store.db)
    assert [r.status for r in rows] == ["unknown"] and gateway.settled == 0

    shop.outage.down = False
    outputs = set()
    for _ in range(2):
        answer = await shop.pay(header)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert json.loads(body["output"]["text"])["words"] == 3
        receipt = Receipt.verify(base64.b64decode(body["receipt"]["signed"]))
        assert receipt.channel == f"x402:{settle['transaction']}" and receipt.cumulative == PRICE
        assert decoded(answer.headers["payment-response"])["success"] is True
        outputs.add(body["receipt"]["signed"])
    assert len(outputs) == 1 and shop.served == 1 and gateway.settled == 1

    async def forwarded() -> bool:
        await gateway._forward_due()
        return await gateway.owed() == 0

    await until(forwarded, budget(10), "the royalty's forward")
    after = await shop.balances()
    assert after["buyer"] == before["buyer"] - PRICE
    assert after["creator"] == before["creator"] + ROYALTY
    assert after["provider"] == before["provider"] + PRICE - ROYALTY


async def test_one_payment_at_a_time_from_an_account_and_one_that_never_landed_is_freed(
    shop: Shop,
) -> None:
    gateway = shop.gateway
    gateway.settle_timeout = budget(3.0)
    before = await shop.balances()
    accepted = (await shop.required())["accepts"][0]
    first = header_for(accepted, payment_transaction(shop, accepted))
    second = header_for(accepted, payment_transaction(shop, accepted))  # the same account
    shop.outage.down, shop.outage.delivers = True, False  # nothing reaches the ledger
    answers: dict[str, httpx.Response] = {}

    async def pay_first() -> None:
        answers["first"] = await shop.pay(first)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pay_first)

        async def settling() -> bool:
            return bool(gateway._sources)

        await until(settling, budget(10), "the first payment's settlement")
        busy = await shop.pay(second)
        assert busy.status_code == 429, busy.text
        assert busy.json()["error"] == "payment_in_flight" and busy.headers["retry-after"] == "1"
    assert answers["first"].status_code == 202
    assert shop.served == 1  # the second did not run

    # Its payment can land no more: the same payment again is the x402 error, and freed.
    shop.outage.down = False
    await fund_tokens(shop.ledger, Keypair().pubkey(), 1)  # the ledger moves past its blockhash
    failed = await shop.pay(first)
    assert failed.status_code == 402, failed.text
    assert failed.json()["error"] == "invalid_exact_svm_transaction_failed"
    assert decoded(failed.headers["payment-response"])["success"] is False
    assert await shop.node.store.run(book.unresolved, shop.node.store.db) == []
    again = await shop.pay(first)  # a fresh payment now, and an expired one: nothing runs
    assert again.json()["error"] == "invalid_exact_svm_transaction_simulation_failed"
    assert shop.served == 1 and gateway.settled == 0
    assert await shop.balances() == before
    # Another payment from that account goes through now.
    assert (await shop.pay(await pay_header(shop))).status_code == 200


async def test_a_royalty_forward_is_sent_once_whatever_the_ledger_cannot_say(shop: Shop) -> None:
    """A forward whose answer is lost stays under way while the ledger cannot say
    whether it landed (even once its blockhash expired): never sent twice. One
    stuck on a ledger that cannot say whether its blockhash expired is dropped
    (and paid again) only once older than any blockhash's life."""
    gateway, db = shop.gateway, shop.node.store.db
    before = await shop.balances()

    async def owe(message: str, royalty: int) -> None:
        row = book.PaymentRow(
            message, "1" * 64, "someone", shop.agent, str(TEST_MINT), 0, str(shop.creator),
            royalty, str(Hash.default()), created=time.time(),
        )  # fmt: skip
        await shop.node.store.run(book.claim, db, row)
        await shop.node.store.run(book.mark, db, message, "settled")

    await owe("a" * 64, ROYALTY)
    shop.outage.down = True
    await gateway._forward_due()  # it reaches the ledger; the answer is lost
    assert (await shop.balances())["creator"] == before["creator"] + ROYALTY
    await fund_tokens(shop.ledger, Keypair().pubkey(), 1)  # its blockhash expires
    await gateway._forward_due()  # expired, but whether it landed is not known
    await gateway._forward_due()
    assert (await shop.balances())["creator"] == before["creator"] + ROYALTY  # once
    assert await gateway.owed() == ROYALTY  # as the book knows: under way
    shop.outage.down = False
    await gateway._forward_due()
    assert await gateway.owed() == 0
    assert (await shop.balances())["creator"] == before["creator"] + ROYALTY

    # Forwards that never landed, on a ledger that cannot say whether a blockhash expired.
    await owe("b" * 64, 7)
    await owe("c" * 64, 11)
    now = time.time()
    for message, amount, made in (("b" * 64, 7, now), ("c" * 64, 11, now - 7200)):
        forward = book.ForwardRow(
            str(Signature.new_unique()), str(shop.creator), str(TEST_MINT), amount,
            str(Hash.default()),
        )  # fmt: skip
        await shop.node.store.run(book.start_forward, db, forward, (message,), made)
    shop.outage.blind = True
    await gateway._forward_due()
    sending = await shop.node.store.run(book.sending, db)
    assert [f.amount for f in sending] == [7]  # the young one stays; the old one was paid again
    assert (await shop.balances())["creator"] == before["creator"] + ROYALTY + 11


async def test_agents_that_cannot_be_sold_per_call_are_left_out(tmp_path: Path) -> None:
    """A run longer than a payment's blockhash allows, a price over a u64 of base
    units: not listed, refused for their runs; the others still are."""
    async for shop in open_shop(tmp_path, units_per_lamport=100_000.0):
        wasm = EXAMPLES / "wordcount" / "wordcount.wasm"
        for name, changes in (
            ("slow", {"price": PRICE, "limits": {"timeout_s": 45}}),
            ("dear", {"price": 10**15}),  # 10^20 base units
        ):
            listing = {**LISTING, "name": name, "royalty_bps": 0, **changes}
            await shop.node.registry.publish("creator", listing)
            await shop.node.api.registry.release("creator", {"name": name, "version": "1.0.0"},
                                                 wasm)  # fmt: skip
        slow, dear = f"{shop.creator}/slow", f"{shop.creator}/dear"
        shop.node.tasks.serve_agents((shop.agent, slow, dear))
        listed = await shop.http.get(f"{shop.url}/x402/v2/agents")
        assert listed.status_code == 200
        assert [a["agent"] for a in listed.json()["agents"]] == [shop.agent]
        answer = await shop.http.post(f"{shop.url}/x402/v2/run/{slow}", content=TEXT)
        assert (answer.status_code, answer.json()["error"]) == (403, "run_too_long")
        answer = await shop.http.post(f"{shop.url}/x402/v2/run/{dear}", content=TEXT)
        assert (answer.status_code, answer.json()["error"]) == (503, "unavailable")
        assert shop.served == 0


async def test_bodies_a_call_would_not_use_are_not_read_or_run_on(shop: Shop) -> None:
    app = GatewayApp(Config().gateway)
    app.service = shop.gateway
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 4000))

    async def endless() -> AsyncIterator[bytes]:
        yield b"x" * 1024
        await trio.sleep(60)
        yield b"never"

    # Without payment, a paid agent's 402 and an unknown agent's 404 come from the head.
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        with trio.fail_after(budget(5)):
            unpaid = await client.post(f"/x402/v2/run/{shop.agent}", content=endless())
            assert unpaid.status_code == 402 and unpaid.headers["payment-required"]
            unknown = await client.post("/x402/v2/run/nobody/wc", content=endless())
            assert unknown.status_code == 404

    # A client gone before its whole body came: nothing runs, nothing is taken.
    header = await pay_header(shop)
    scope = {
        "type": "http", "method": "POST", "path": f"/x402/v2/run/{shop.agent}",
        "headers": [(b"payment-signature", header.encode()), (b"host", b"gw")],
        "client": ("203.0.113.10", 4000), "scheme": "http", "server": ("gw", 80),
    }  # fmt: skip
    messages = iter(
        [{"type": "http.request", "body": b"three", "more_body": True}, {"type": "http.disconnect"}]
    )
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    assert sent == [] and shop.served == 0
    assert await shop.node.store.run(book.unresolved, shop.node.store.db) == []
    assert app._bodies.held == 0
    assert (await shop.pay(header)).status_code == 200  # the payment was not taken


async def test_bodies_held_at_once_are_bounded() -> None:
    config = dataclasses.replace(Config().gateway, max_body_mb=1)
    app = GatewayApp(config, body_timeout=1.0, body_budget=0)  # 2 MiB: two of the largest
    transport = httpx.ASGITransport(app=app, client=("203.0.113.11", 4000))
    statuses: list[int] = []

    async def stalled() -> AsyncIterator[bytes]:
        yield b"x" * (900 * 1024)
        await trio.sleep(3)

    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:

        async def call() -> None:
            answer = await client.post(
                "/x402/v2/run/a/b", content=stalled(), headers={"PAYMENT-SIGNATURE": "eA=="}
            )
            statuses.append(answer.status_code)
            if answer.status_code == 503:
                assert answer.json()["error"] == "busy" and answer.headers["retry-after"]

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(call)
    assert sorted(statuses) == [408, 408, 503]
    assert app._bodies.held == 0


async def test_a_ledger_that_does_not_have_the_asset_is_not_asked_on_every_call(
    shop: Shop,
) -> None:
    gateway = shop.gateway
    missing = Keypair().pubkey()
    gateway._asset = None
    gateway.config = dataclasses.replace(gateway.config, asset=str(missing))
    for _ in range(3):
        with pytest.raises(GatewayRefused, match="not a token mint") as caught:
            await gateway.asset()
        assert caught.value.status == 503
    assert shop.outage.asked[missing] == 1
    gateway._asset_failed = (0.0, *gateway._asset_failed[1:])  # a while later: asked again
    with pytest.raises(GatewayRefused):
        await gateway.asset()
    assert shop.outage.asked[missing] == 2
