"""The localnet's WebSocket endpoint (Solana's PubSub API) with a real WebSocket
client: against `serve_localnet` in this process (HTTP on a free port P, the
WebSocket on P + 1), against a `mercato localnet` process (its stop closes the
WebSockets with 1001), and the hub alone over a scripted ledger (its bounds)."""

from __future__ import annotations

import base64
import json
import signal
import socket
import statistics
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

from mercato.node import serve_localnet
from mercato.settlement import PubSubHub, PubSubLimits

from ..conftest import budget, wait_for

SOL = 10**9
WAIT_S = budget(10.0)  # for any one message: slots come every 400 ms
READ_METHODS = {"getSlot", "getAccountInfo", "getProgramAccounts", "getSignatureStatuses"}


@dataclass
class Client:
    """A WebSocket speaking JSON-RPC: answers by id, notifications kept by subscription."""

    ws: WebSocketConnection
    next_id: int = 1
    notes: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    answers: dict[Any, dict[str, Any]] = field(default_factory=dict)

    async def send(self, method: str, params: list[Any] | None = None) -> int:
        request_id = self.next_id
        self.next_id += 1
        request: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            request["params"] = params
        await self.ws.send_message(json.dumps(request))
        return request_id

    async def _read_one(self) -> None:
        message = json.loads(await self.ws.get_message())
        if "method" in message:
            params = message["params"]
            self.notes.setdefault(params["subscription"], []).append(message)
        else:
            self.answers[message["id"]] = message

    async def answer(self, request_id: Any) -> dict[str, Any]:
        with trio.fail_after(WAIT_S):
            while request_id not in self.answers:
                await self._read_one()
        return self.answers.pop(request_id)

    async def call(self, method: str, params: list[Any] | None = None) -> dict[str, Any]:
        return await self.answer(await self.send(method, params))

    async def raw(self, frame: str | bytes) -> dict[str, Any]:
        """The answer to a frame sent as is (an error's id is null)."""
        await self.ws.send_message(frame)
        return await self.answer(None)

    async def subscribe(self, method: str, params: list[Any] | None = None) -> int:
        reply = await self.call(method, params)
        assert isinstance(reply.get("result"), int), reply
        return int(reply["result"])

    async def notes_of(self, sub: int, count: int = 1) -> list[dict[str, Any]]:
        """The first ``count`` notifications of ``sub`` (waiting for them)."""
        await self.until(lambda: len(self.notes.get(sub, [])) >= count, count)
        return self.notes[sub][:count]

    async def until(self, condition: Callable[[], bool], messages: int = 1) -> None:
        """Read until ``condition()``; fail after WAIT_S for each of ``messages``."""
        with trio.fail_after(WAIT_S * messages):
            while not condition():
                await self._read_one()

    def results(self, sub: int) -> list[Any]:
        return [n["params"]["result"] for n in self.notes.get(sub, [])]


@dataclass
class Net:
    url: str
    ws_url: str
    directory: Path
    http: httpx.AsyncClient

    def connect(self) -> AbstractAsyncContextManager[Client]:
        return connect(self.ws_url)

    async def rpc(self, method: str, params: list[Any]) -> Any:
        reply = (
            await self.http.post(
                self.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
            )
        ).json()
        assert "result" in reply, reply
        return reply["result"]


@asynccontextmanager
async def connect(ws_url: str) -> AsyncIterator[Client]:
    """A WebSocket client on ``ws_url``. (The TCP stream is ours to close:
    trio-websocket leaves it open when the server closes first.)"""
    host, port = ws_url.removeprefix("ws://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    try:
        async with trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, host, "/")
            try:
                yield Client(ws)
            finally:
                await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await stream.aclose()


@asynccontextmanager
async def localnet(tmp_path: Path) -> AsyncIterator[Net]:
    directory = tmp_path / "localnet"
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        url = await nursery.start(serve_localnet, directory, "127.0.0.1", 0)
        ws_url = (directory / "ws_url").read_text().strip()
        yield Net(url, ws_url, directory, http)
        nursery.cancel_scope.cancel()


async def test_the_websocket_is_on_the_http_port_plus_one_and_slots_come_in_order(
    tmp_path: Path,
) -> None:
    async with localnet(tmp_path) as net:
        http_port = int(net.url.rsplit(":", 1)[1])
        assert net.ws_url == f"ws://127.0.0.1:{http_port + 1}"
        async with net.connect() as client:
            sub = await client.subscribe("slotSubscribe")
            notes = await client.notes_of(sub, 3)
            shown = [n["params"]["result"] for n in notes]
            assert all(n["method"] == "slotNotification" for n in notes)
            assert [s["slot"] for s in shown] == list(range(shown[0]["slot"], shown[0]["slot"] + 3))
            assert all(s["parent"] == s["slot"] - 1 and s["root"] <= s["slot"] for s in shown)

            # Unsubscribed, it hears nothing more: a second subscription hears two
            # slots after the answer, the first none.
            assert (await client.call("slotUnsubscribe", [sub]))["result"] is True
            heard = len(client.notes[sub])
            other = await client.subscribe("slotSubscribe")
            await client.notes_of(other, 2)
            assert len(client.notes[sub]) == heard
            again = await client.call("slotUnsubscribe", [sub])
            assert again["error"] == {"code": -32602, "message": "Invalid subscription id."}

            root = await client.subscribe("rootSubscribe")
            first, second = await client.notes_of(root, 2)
            assert first["method"] == "rootNotification"
            assert second["params"]["result"] > first["params"]["result"] >= 0


async def test_an_airdrop_is_confirmed_once_and_its_account_notified(tmp_path: Path) -> None:
    async with localnet(tmp_path) as net, net.connect() as client:
        who = Keypair().pubkey()
        account = await client.subscribe("accountSubscribe", [str(who), {"encoding": "base64"}])
        latencies = []
        for round_ in range(1, 6):
            sent = time.perf_counter()
            signature = await net.rpc("requestAirdrop", [str(who), SOL])
            sub = await client.subscribe(
                "signatureSubscribe", [signature, {"commitment": "confirmed"}]
            )
            (note,) = await client.notes_of(sub)
            latencies.append(time.perf_counter() - sent)
            assert note["method"] == "signatureNotification"
            result = note["params"]["result"]
            assert result["value"] == {"err": None} and isinstance(result["context"]["slot"], int)
            # One notification, then the subscription is over.
            gone = await client.call("signatureUnsubscribe", [sub])
            assert gone["error"]["message"] == "Invalid subscription id."
            balance = round_ * SOL
            await client.until(
                lambda: balance in [r["value"]["lamports"] for r in client.results(account)]  # noqa: B023
            )
        assert len(client.notes[sub]) == 1
        value = client.results(account)[-1]["value"]
        assert value["owner"] == "11111111111111111111111111111111"
        assert value["data"] == ["", "base64"]
        print(f"airdrop to signatureNotification: {[round(s * 1000, 1) for s in latencies]} ms")
        assert statistics.median(latencies) < budget(0.45)


async def test_a_transfer_subscribed_before_it_is_sent_is_confirmed(tmp_path: Path) -> None:
    async with localnet(tmp_path) as net, net.connect() as client:
        payer, payee = Keypair(), Keypair()
        airdrop = await net.rpc("requestAirdrop", [str(payer.pubkey()), SOL])
        sub = await client.subscribe("signatureSubscribe", [airdrop, {"commitment": "processed"}])
        await client.notes_of(sub)
        blockhash = Hash.from_string(
            (await net.rpc("getLatestBlockhash", []))["value"]["blockhash"]
        )
        move = transfer(
            TransferParams(from_pubkey=payer.pubkey(), to_pubkey=payee.pubkey(), lamports=SOL // 2)
        )
        tx = Transaction([payer], Message([move], payer.pubkey()), blockhash)
        signature = str(tx.signatures[0])
        sub = await client.subscribe(
            "signatureSubscribe", [signature, {"enableReceivedNotification": True}]
        )
        encoded = base64.b64encode(bytes(tx)).decode()
        assert await net.rpc("sendTransaction", [encoded, {"encoding": "base64"}]) == signature
        received, processed = await client.notes_of(sub, 2)
        assert received["params"]["result"]["value"] == "receivedSignature"
        assert processed["params"]["result"]["value"] == {"err": None}


async def test_program_subscribe_notifies_accounts_of_the_program_or_says_it_cannot(
    tmp_path: Path,
) -> None:
    async with localnet(tmp_path) as net, net.connect() as client:
        system = "11111111111111111111111111111111"
        options = {"encoding": "base64", "filters": [{"dataSize": 0}]}
        reply = await client.call("programSubscribe", [system, options])
        probe = await net.http.post(
            net.url,
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "getProgramAccounts",
                "params": [system, options],
            },
        )
        if probe.json().get("error", {}).get("code") == -32601:
            assert reply["error"]["code"] == -32601
            assert "not supported yet" in reply["error"]["message"]
            return
        sub = reply["result"]
        who = str(Keypair().pubkey())
        await net.rpc("requestAirdrop", [who, SOL])
        await client.until(lambda: any(r["value"]["pubkey"] == who for r in client.results(sub)))
        (note,) = [n for n in client.notes[sub] if n["params"]["result"]["value"]["pubkey"] == who]
        assert note["method"] == "programNotification"
        assert note["params"]["result"]["value"]["account"]["lamports"] == SOL


async def test_bad_frames_get_json_rpc_errors_and_the_connection_stays(tmp_path: Path) -> None:
    async with localnet(tmp_path) as net:
        async with net.connect() as client:
            assert (await client.raw("not json"))["error"]["code"] == -32700
            assert (await client.raw("[]"))["error"]["code"] == -32600
            assert (await client.raw("42"))["error"]["code"] == -32600
            assert (await client.raw('{"jsonrpc": "2.0", "id": true, "method": "slotSubscribe"}'))[
                "error"
            ]["code"] == -32600
            unknown = await client.call("sendTransaction", ["AAAA"])
            assert unknown["error"] == {"code": -32601, "message": "Method not found"}
            for method, params in [
                ("signatureSubscribe", ["not a signature"]),
                ("signatureSubscribe", []),
                ("signatureSubscribe", ["1" * 64, {"commitment": "soon"}]),
                ("accountSubscribe", ["not a key"]),
                ("accountSubscribe", [str(Keypair().pubkey()), "base64"]),
                ("programSubscribe", [str(Keypair().pubkey()), {"filters": [{}] * 5}]),
                ("slotUnsubscribe", ["0"]),
                ("accountUnsubscribe", [12345]),
            ]:
                reply = await client.call(method, params)
                assert reply["error"]["code"] == -32602, (method, params, reply)
            # Binary frames are read as text; and the connection still works.
            binary = json.dumps({"jsonrpc": "2.0", "id": "b", "method": "slotSubscribe"}).encode()
            await client.ws.send_message(binary)
            sub = (await client.answer("b"))["result"]
            await client.notes_of(sub)

        # A frame over 64 KiB closes that connection (1009), and only that one.
        async with net.connect() as client:
            await client.ws.send_message("x" * (64 * 1024 + 1))
            with pytest.raises(ConnectionClosed) as closed:
                await client.ws.get_message()
            assert closed.value.reason.code == 1009
        async with net.connect() as client:
            await client.notes_of(await client.subscribe("slotSubscribe"))


async def test_too_many_subscriptions_are_refused(tmp_path: Path) -> None:
    async with localnet(tmp_path) as net, net.connect() as client:
        # Signatures that never land: 1,000 subscriptions that stay.
        signatures = [str(Keypair().sign_message(b"%d" % i)) for i in range(1_001)]
        ids = [await client.send("signatureSubscribe", [s]) for s in signatures]
        replies = [await client.answer(i) for i in ids]
        assert all(isinstance(r.get("result"), int) for r in replies[:1_000])
        assert replies[1_000]["error"]["code"] == -32603
        assert "subscription limit reached" in replies[1_000]["error"]["message"]
        first = replies[0]["result"]
        assert (await client.call("signatureUnsubscribe", [first]))["result"] is True
        assert isinstance((await client.call("slotSubscribe"))["result"], int)


async def test_a_port_whose_next_port_is_taken_is_refused_and_left_free(tmp_path: Path) -> None:
    for _ in range(100):  # a port P free, with P + 1 taken (by us)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        blocker = socket.socket()
        try:
            blocker.bind(("127.0.0.1", port + 1))
            break
        except OSError:
            blocker.close()
    else:
        raise AssertionError("no port P with P + 1 free")
    with blocker:
        blocker.listen()
        with pytest.raises(OSError, match="for the WebSocket"):
            await serve_localnet(tmp_path / "localnet", "127.0.0.1", port)
        with socket.socket() as again:  # the HTTP socket was closed, not leaked
            again.bind(("127.0.0.1", port))
    assert not (tmp_path / "localnet" / "url").exists()


def test_a_stopped_localnet_closes_its_websockets_with_1001(start_localnet) -> None:
    localnet = start_localnet()
    ws_url = (localnet.directory / "ws_url").read_text().strip()
    port = int(localnet.url.rsplit(":", 1)[1])
    assert ws_url == f"ws://127.0.0.1:{port + 1}"
    codes: list[int | None] = []

    async def listen() -> None:
        async with connect(ws_url) as client:
            await client.notes_of(await client.subscribe("slotSubscribe"))
            localnet.proc.send_signal(signal.SIGTERM)
            try:
                with trio.fail_after(WAIT_S):
                    while True:
                        await client.ws.get_message()
            except ConnectionClosed as exc:
                codes.append(exc.reason.code)

    trio.run(listen)
    assert codes == [1001]
    assert localnet.proc.wait(timeout=budget(15)) == 0
    wait_for(lambda: not (localnet.directory / "ws_url").exists(), 5, "ws_url removed")


# The hub alone, over a scripted ledger.


class Ledger:
    """Answers the hub's read requests from fields a test sets; records the methods."""

    def __init__(self) -> None:
        self.slot = 10
        self.landed: dict[str, Any] = {}
        self.methods: set[str] = set()

    async def answer(self, body: bytes) -> bytes:
        request = json.loads(body)
        method, params = request["method"], request["params"]
        self.methods.add(method)
        context = {"slot": self.slot}
        if method == "getSlot":
            result: Any = self.slot
        elif method == "getSignatureStatuses":
            found = [self.landed.get(s) for s in params[0]]
            result = {"context": context, "value": found}
        elif method == "getAccountInfo":
            result = {"context": context, "value": None}
        else:
            error = {"code": -32601, "message": "Method not found"}
            return json.dumps({"jsonrpc": "2.0", "error": error, "id": request["id"]}).encode()
        return json.dumps({"jsonrpc": "2.0", "result": result, "id": request["id"]}).encode()


def _request(method: str, params: list[Any] | None = None, request_id: int = 1) -> str:
    return json.dumps(
        {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or []}
    )


async def test_the_hub_refuses_past_its_bounds_and_drops_a_client_that_does_not_read() -> None:
    ledger = Ledger()
    limits = PubSubLimits(max_connections=2, max_subscriptions=3, per_connection=2, max_queued=5)
    hub = PubSubHub(ledger.answer, limits)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        one, two = hub.open_session(), hub.open_session()
        assert one is not None and two is not None
        assert hub.open_session() is None  # a third connection

        # programSubscribe without getProgramAccounts: not supported yet.
        await two.handle(_request("programSubscribe", ["11111111111111111111111111111111"]))
        assert json.loads(await two.next_message() or "")["error"]["code"] == -32601
        for session, expect in ((one, [0, 1, None]), (two, [2, None])):
            for want in expect:
                await session.handle(_request("slotSubscribe"))
                reply = json.loads(await session.next_message() or "")
                assert reply.get("result") == want, reply
                if want is None:
                    assert reply["error"]["code"] == -32603

        # `one` never reads: past five queued notifications (two a slot) it is
        # dropped (1008), its subscriptions with it; `two` reads and stays.
        for _ in range(3):
            ledger.slot += 1
            with trio.fail_after(WAIT_S):
                while f'"slot":{ledger.slot}' not in (await two.next_message() or ""):
                    pass
        assert one.close_code == 1008 and await one.next_message() is None
        assert hub.subscriptions == 1 and hub.connections == 1

        # A signature that lands is notified once, then forgotten.
        await two.handle(_request("signatureSubscribe", ["1" * 64]))
        sub = json.loads(await two.next_message() or "")["result"]
        ledger.landed["1" * 64] = {
            "slot": 12,
            "confirmations": None,
            "err": None,
            "confirmationStatus": "finalized",
        }
        hub.notify()
        with trio.fail_after(WAIT_S):
            while True:
                note = json.loads(await two.next_message() or "")
                if note["method"] == "signatureNotification":
                    break
        assert note["params"] == {
            "result": {"context": {"slot": 12}, "value": {"err": None}},
            "subscription": sub,
        }
        assert hub.subscriptions == 1

        hub.close()  # going away
        assert two.close_code == 1001 and await two.next_message() is None
    assert ledger.methods <= READ_METHODS
