"""Composite agents: a run calls other agents through its provider's node, within
the user's budget, and every lamport lands where the receipts say.

Three nodes in this process on one embedded ledger, real libp2p and real
wasmtime: ``runner`` runs the composite agents, ``callee`` serves the agents
they call (and publishes them), ``user`` asks. The models' side of the host API
is tested with a real engine in tests/models/test_composite_daemons.py.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from solders.pubkey import Pubkey
from wasmtime import wat2wasm

from mercato.node import Node
from mercato.node.tasks import BadReceipt, Receipt, SubCall, check_subcalls, decode_subcalls
from mercato.node.tasks._messages import TASK, TaskResponse, encode_subcalls
from mercato.node.tasks._subcalls import read_task_receipt
from mercato.p2p import Keypair
from mercato.runtime import HostStatus
from mercato.settlement import open_embedded_ledger, settle_due

from ..conftest import budget
from .test_registry_network import running_nodes
from .test_tasks import EXAMPLES, LISTING, MODULES, until, wordcount

PRICE = 1_000_000  # the composite agent's own price
SUB_PRICE = 3_000_000  # wordcount's, with a 10 % royalty to its creator
ROYALTY_BPS = 1000
FEE = 5000


@dataclass
class Net:
    ledger: Any
    runner: Node
    callee: Node
    user: Node

    async def release(
        self, node: Node, name: str, wasm: bytes | Path, deps: dict[str, str] | None = None,
        price: int = 0, royalty_bps: int = 0, **limits: int,
    ) -> str:  # fmt: skip
        """Publish and release ``name`` from ``node``'s default key; its reference."""
        listing = {**LISTING, "name": name, "price": price, "royalty_bps": royalty_bps}
        if limits:
            listing["limits"] = limits
        publisher = (await node.registry.publish("default", listing))["publisher"]
        if isinstance(wasm, bytes):
            path = node.datadir.root / f"{name}.wasm"
            path.write_bytes(wasm)
            wasm = path
        cid = (await node.builds.add_file(wasm)).cid
        release = {"name": name, "version": "1.0.0", "cid": cid, "size": wasm.stat().st_size,
                   "dependencies": deps or {}}  # fmt: skip
        await node.registry.release("default", release)
        return f"{publisher}/{name}"

    async def serve(self, node: Node, *agents: str) -> None:
        node.tasks.serve_agents((*node.tasks.serving, *agents))
        others = [n for n in (self.runner, self.callee, self.user) if n is not node]

        async def ready() -> bool:
            for agent in agents:
                publisher, _, name = agent.partition("/")
                for other in others:
                    shown = await other.registry.show(publisher, name)
                    if not (shown and shown["releases"] and other.tasks.providers(agent)):
                        return False
            return True

        await until(ready, budget(30), f"{', '.join(agents)} on offer")


@asynccontextmanager
async def composite_network(root: Path, **tasks: Any) -> AsyncIterator[Net]:
    fast = {"heartbeat_s": 0.5, "card_ttl_s": 5.0}
    async with (
        open_embedded_ledger(root / "ledger.db") as ledger,
        running_nodes(root, 3, serve=fast, ledger=ledger, tasks=tasks or None) as nodes,
    ):
        for i, a in enumerate(nodes):
            for b in nodes[i + 1 :]:
                await a.overlay.host.connect(b.overlay.host.listen_addrs()[0])
        yield Net(ledger, *nodes)


def guest(name: str) -> bytes:
    return bytes(wat2wasm((MODULES / f"{name}.wat").read_text()))


def calls_of(receipt: Receipt) -> list[Any]:
    return decode_subcalls(receipt.subcalls)


@pytest.mark.slow
async def test_a_composite_agent_pays_its_calls_and_the_user_pays_exactly_them(
    tmp_path: Path,
) -> None:
    async with composite_network(tmp_path) as net:
        wc = await net.release(
            net.callee, "wordcount", EXAMPLES / "wordcount" / "wordcount.wasm",
            price=SUB_PRICE, royalty_bps=ROYALTY_BPS,
        )  # fmt: skip
        await net.serve(net.callee, wc)
        # The digest example calls wordcount and a model named summarizer; this
        # release declares wordcount only.
        digest = await net.release(
            net.runner, "digest", EXAMPLES / "digest" / "digest.wasm", {wc: "^1"}, price=PRICE
        )
        await net.serve(net.runner, digest)
        text = b"three little words and two more"

        # With a budget that covers the call: the user pays the price and what
        # the call cost, exactly; the runner paid the callee its price.
        done = await net.user.tasks.run_task(digest, "*", text, most=PRICE + SUB_PRICE)
        out = json.loads(done["output"])
        assert out["wordcount"] == wordcount(text) and out["summary"] is None
        (model_error,) = out["errors"]
        assert model_error.startswith(f"infer: {int(HostStatus.UNDECLARED)} ")
        receipt: Receipt = done["receipt"]
        assert (receipt.price, receipt.subcalls_cost, receipt.cost) == (
            PRICE, SUB_PRICE, PRICE + SUB_PRICE,
        )  # fmt: skip
        call, infer = calls_of(receipt)
        assert (call.op, call.target, call.status, call.cost) == ("call", wc, 0, SUB_PRICE)
        assert (infer.op, infer.status, infer.cost) == ("infer", HostStatus.UNDECLARED, 0)
        sub = Receipt.verify(call.receipt)
        assert (sub.user, sub.parent, sub.price) == (
            net.runner.overlay.peer_id, receipt.task, SUB_PRICE,
        )  # fmt: skip
        await _books_settled(net, PRICE + SUB_PRICE, SUB_PRICE)

        # Without a budget only free calls may happen: the call fails inside the
        # agent, unsent, and the user pays the price alone.
        alone = await net.user.tasks.run_task(digest, "*", text)
        out = json.loads(alone["output"])
        assert out["wordcount"] is None
        assert out["errors"][0].startswith(f"call: {int(HostStatus.OVER_BUDGET)} ")
        assert "budget" in out["errors"][0]
        assert alone["receipt"].cost == PRICE and calls_of(alone["receipt"])[0].cost == 0
        # ... and a budget that leaves less than the call's price does the same.
        short = await net.user.tasks.run_task(digest, "*", text, most=PRICE + SUB_PRICE - 1)
        assert json.loads(short["output"])["wordcount"] is None
        assert short["receipt"].cost == PRICE
        assert net.callee.tasks.served == 1  # neither reached the callee

        # Every lamport lands where the receipts say when the channels close: the
        # runner closes the user's channel, the callee the runner's.
        paid_by_user = 3 * PRICE + SUB_PRICE
        await _books_settled(net, paid_by_user, SUB_PRICE)
        nodes = (net.runner, net.callee)
        wallets = {n: Pubkey.from_string(n.settlement.address) for n in nodes}
        before = {n: await net.ledger.balance(k) for n, k in wallets.items()}
        (fronted,) = net.runner.settlement.channels()[1:]
        assert fronted["role"] == "payer"
        await net.ledger.set_time(fronted["expires"] - 60)
        for node in nodes:
            money = node.settlement
            closed = await settle_due(money.book, net.ledger, {wallets[node]: money.wallet}, 3600)
            assert [status for _, status in closed] == ["closed"]
        after = {n: await net.ledger.balance(k) for n, k in wallets.items()}
        # The runner: what the user paid, and the rest of its own deposit back (a
        # close's fee is two signatures', its payee's to pay).
        deposit = fronted["deposit"]
        assert after[net.runner] - before[net.runner] == (
            paid_by_user - 2 * FEE + deposit - SUB_PRICE
        )
        # The callee (wordcount's creator too, so its royalty is its own): the price.
        assert after[net.callee] - before[net.callee] == SUB_PRICE - 2 * FEE


async def _books_settled(net: Net, user_paid: int, runner_paid: int) -> None:
    """The channels as the receipts say: the user paid the runner ``user_paid`` in
    all, the runner paid the callee ``runner_paid``; each payee holds it settled."""

    async def settled() -> bool:
        paying = [c for c in net.user.settlement.channels() if c["role"] == "payer"]
        served = [c for c in net.runner.settlement.channels() if c["role"] == "payee"]
        fronted = [c for c in net.runner.settlement.channels() if c["role"] == "payer"]
        callee = [c for c in net.callee.settlement.channels() if c["role"] == "payee"]
        return (
            [c["paid"] for c in paying] == [user_paid]
            and [sum(c["settled"].values()) for c in served] == [user_paid]
            and [c["paid"] for c in fronted] == [runner_paid]
            and [sum(c["settled"].values()) for c in callee] == [runner_paid]
        )

    await until(settled, budget(10), "the books to say what the receipts say")


@pytest.mark.slow
async def test_bad_sub_calls_fail_inside_the_agent_and_cost_the_user_nothing(
    tmp_path: Path,
) -> None:
    async with composite_network(tmp_path, max_attempts=1) as net:
        echo = await net.release(
            net.callee, "echo", EXAMPLES / "echo" / "echo.wasm", price=SUB_PRICE
        )
        echo_here = await net.release(net.runner, "echo", EXAMPLES / "echo" / "echo.wasm")
        hop = await net.release(net.callee, "hop", guest("forward"), {echo_here: "*"})
        await net.serve(net.callee, echo, hop)
        await net.serve(net.runner, echo_here)
        shallow = await net.release(
            net.runner, "shallow", guest("forward"), {hop: "*", echo: "*"}, max_depth=1
        )
        deep = await net.release(net.runner, "deep", guest("forward"), {hop: "*"})
        looping = await net.release(
            net.runner, "looping", guest("loop_caller"), {echo: "*"}, max_subcalls=5
        )
        bad = await net.release(net.runner, "bad", guest("bad_args"), {echo: "*"})
        patient = await net.release(net.runner, "patient", guest("forward"), {echo: "*"},
                                    timeout_s=3)  # fmt: skip
        await net.serve(net.runner, shallow, deep, looping, bad, patient)
        user = net.user.tasks
        plenty = 100 * SUB_PRICE

        async def run(agent: str, text: bytes, parts: int = 2) -> tuple[list[str], Receipt]:
            """The output's first ``parts`` space-separated parts, and the receipt."""
            done = await user.run_task(agent, "*", text, most=plenty)
            return done["output"].decode().split(" ", parts - 1), done["receipt"]

        # Undeclared: a listing the release does not name.
        (status, message), receipt = await _two(run(shallow, b"somebody/else\nhi"))
        assert int(status) == HostStatus.UNDECLARED and "dependencies" in message
        assert [c.status for c in calls_of(receipt)] == [HostStatus.UNDECLARED]

        # Depth: the hop runs one level down and may call nothing more.
        # (forward writes a call's status, which is the result's length when it
        # succeeded, then the result.)
        (status, rest), receipt = await _two(run(shallow, b"hop\necho\nhello"))
        assert int(status) == len(rest) and rest.startswith(f"{int(HostStatus.TOO_DEEP)} ")
        (hop_call,) = calls_of(receipt)
        nested = calls_of(Receipt.verify(hop_call.receipt))
        assert [c.status for c in nested] == [HostStatus.TOO_DEEP]
        # With depth left, the same chain reaches echo two levels down.
        (status, rest), receipt = await _two(run(deep, b"hop\necho\nhello"))
        assert (int(status), rest) == (len("5 hello"), "5 hello")

        # A guest that loops calling stops at the listing's bound: five paid calls.
        served = net.callee.tasks.served
        words, receipt = await run(looping, b"echo\nagain", 3)
        assert words[:2] == ["5", str(int(HostStatus.TOO_MANY))]
        assert net.callee.tasks.served - served == 5
        assert [c.status for c in calls_of(receipt)] == [0] * 5 + [HostStatus.TOO_MANY]
        assert receipt.subcalls_cost == 5 * SUB_PRICE

        # Malformed arguments: refused in the sandbox, recorded, nothing sent.
        words, receipt = await run(bad, b"")
        assert int(words[0]) == HostStatus.BAD_ARGUMENTS
        assert [c.status for c in calls_of(receipt)] == [HostStatus.BAD_ARGUMENTS]
        assert receipt.subcalls_cost == 0

        # A callee that never answers: the call gives up before the run's time is
        # out, the agent hears it, and the user pays nothing for it.
        answer = net.callee.tasks._answer
        released = trio.Event()

        async def hang(peer: str, request: Any) -> TaskResponse:
            if request.op == "run":
                await released.wait()
            return await answer(peer, request)

        net.callee.overlay.requests.serve(TASK, hang)
        (status, message), receipt = await _two(run(patient, b"echo\nanyone"))
        assert int(status) == HostStatus.TIMEOUT and "did not answer" in message
        (call,) = calls_of(receipt)
        assert (call.status, call.cost, receipt.subcalls_cost) == (HostStatus.TIMEOUT, 0, 0)

        # A callee whose receipt does not hold up: not paid on, nothing charged.
        async def forge(peer: str, request: Any) -> TaskResponse:
            response = await answer(peer, request)
            if request.op != "run":
                return response
            return TaskResponse(output=response.output + b"!", receipt=response.receipt)

        net.callee.overlay.requests.serve(TASK, forge)
        (status, message), receipt = await _two(run(shallow, b"echo\nforged"))
        assert int(status) == HostStatus.BAD_RECEIPT, message
        (call,) = calls_of(receipt)
        assert (call.status, call.cost) == (HostStatus.BAD_RECEIPT, 0)
        # (The hung run, let go, would now take the runner's payment for it: the
        # runner's loss, never the user's.)
        released.set()


async def _two(running: Any) -> tuple[list[str], Receipt]:
    words, receipt = await running
    assert len(words) == 2, words
    return words, receipt


def test_a_receipt_that_lies_about_its_sub_calls_is_refused() -> None:
    """`check_subcalls` alone: each sub-receipt signed, made for this caller and
    task, for a declared listing, listed once, and the charges adding up."""
    runner, callee = Keypair.generate(), Keypair.generate()
    task = b"p" * 16

    def sub(price: int = 7, parent: bytes = task, user: str = runner.peer_id, **kw: Any) -> bytes:
        fields = dict(
            task=kw.pop("id", b"s" * 16), agent="a/echo", version="1.0.0", cid="bld-x",
            input_hash=b"", output_hash=b"", outcome=kw.pop("outcome", "ok"), fuel=1,
            wall_ms=1, price=price, provider=callee.peer_id, user=user, time=0, parent=parent,
        )  # fmt: skip
        return Receipt(**fields).sign(callee)

    def parent(calls: list[SubCall], cost: int, signer: Keypair = runner) -> Receipt:
        return Receipt(
            task=task, agent="a/digest", version="1.0.0", cid="bld-y", input_hash=b"",
            output_hash=b"", outcome="ok", fuel=1, wall_ms=1, price=1,
            provider=signer.peer_id, user="u", time=0, subcalls=encode_subcalls(calls),
            subcalls_cost=cost,
        )  # fmt: skip

    declared = {"a/echo": "*"}
    readers = {"call": read_task_receipt}
    good = SubCall("call", "a/echo", 0, receipt=sub(), cost=7)
    failed = SubCall("call", "a/echo", int(HostStatus.FAILED), receipt=sub(id=b"f" * 16,
                     outcome="trap"))  # fmt: skip
    assert check_subcalls(parent([good, failed], 7), declared, readers) == [good, failed]
    lies = {
        "it charges 8": ([good], 8),
        "charges for a sub-call that failed": ([dataclasses.replace(failed, cost=3)], 3),
        "other than its receipt": ([dataclasses.replace(good, cost=9)], 9),
        "twice": ([good, good], 14),
        "without its receipt": ([dataclasses.replace(good, receipt=b"", cost=0)], 0),
        "another caller or task": ([dataclasses.replace(good, receipt=sub(parent=b"x" * 16))], 7),
        "another caller": ([dataclasses.replace(good, receipt=sub(user="someone"))], 7),
        "did not declare": ([dataclasses.replace(good, target="a/other")], 7),
        "another listing": ([SubCall("call", "a/other", 0, receipt=sub(), cost=7)], 7),
    }
    for why, (calls, cost) in lies.items():
        with pytest.raises(BadReceipt, match=why):
            check_subcalls(parent(calls, cost), {**declared, "a/other": "*"}
                           if why == "another listing" else declared, readers)  # fmt: skip
    # A call refused in the sandbox names nothing, has no receipt and costs nothing.
    nameless = SubCall("call", "", 0, receipt=sub(), cost=7)
    with pytest.raises(BadReceipt, match="did not fail in its sandbox"):
        check_subcalls(parent([nameless], 7), declared, readers)
    refused = SubCall("call", "", int(HostStatus.BAD_ARGUMENTS), "outside memory")
    assert check_subcalls(parent([refused], 0), declared, readers) == [refused]
    # A callee that asks another price than the listing's (a made-up callee).
    with pytest.raises(BadReceipt, match="asks 7 lamports"):
        check_subcalls(parent([good], 7), declared, readers, {"a/echo": frozenset({5})})
    # A forged sub-receipt does not verify.
    forged = sub()[:-3] + b"xyz"
    with pytest.raises(BadReceipt):
        check_subcalls(parent([dataclasses.replace(good, receipt=forged)], 7), declared, readers)
