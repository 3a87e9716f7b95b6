"""Tasks: a user runs someone's agent on someone else's node and checks the receipt."""

import hashlib
from pathlib import Path

import pytest
import trio

from node._tasks import TASK, BadReceipt, Receipt, TaskError, TaskRequest, TaskResponse
from p2p import Keypair

from .test_registry_network import running_nodes

EXAMPLES = Path(__file__).parents[2] / "runtime" / "examples"
LISTING = {"kind": "agent", "title": "Word count", "summary": "Counts.", "price": 0}


def test_a_receipt_holds_only_for_its_task_input_and_output() -> None:
    provider = Keypair.generate()
    receipt = Receipt(
        task=b"t" * 16,
        agent="a/b",
        version="1.0.0",
        cid="bld-" + "0" * 64,
        input_hash=hashlib.sha256(b"in").digest(),
        output_hash=hashlib.sha256(b"out").digest(),
        outcome="ok",
        fuel=1,
        wall_ms=1,
        price=0,
        provider=provider.peer_id,
        user="someone",
        time=0,
    )
    signed = receipt.sign(provider)
    Receipt.verify(signed).check(b"t" * 16, provider.peer_id, b"in", b"out")
    with pytest.raises(BadReceipt, match="output"):
        Receipt.verify(signed).check(b"t" * 16, provider.peer_id, b"in", b"other")
    with pytest.raises(BadReceipt, match="another task"):
        Receipt.verify(signed).check(b"x" * 16, provider.peer_id, b"in", b"out")
    forged = Receipt(**{**receipt.body(), "provider": Keypair.generate().peer_id}).sign(provider)
    with pytest.raises(BadReceipt, match="not signed"):
        Receipt.verify(forged)
    with pytest.raises(BadReceipt):
        Receipt.verify(b"junk")


@pytest.mark.slow
async def test_a_user_runs_an_agent_it_holds_no_copy_of(tmp_path: Path, monkeypatch) -> None:
    wasm = EXAMPLES / "wordcount" / "wordcount.wasm"
    from node._builds import manifest_of
    from node._buildservice import responsible

    cid = manifest_of(wasm).cid
    fast = {"heartbeat_s": 0.3, "card_ttl_s": 1.5}
    async with running_nodes(tmp_path, 4, serve=fast, repair_interval_s=1.0) as nodes:
        for a in nodes:
            for b in nodes:
                if a is not b and b.overlay.peer_id not in a.overlay.host.connected_peers():
                    await a.overlay.host.connect(b.overlay.host.listen_addrs()[0])
        # The user is the one node not among the 3 that keep the build.
        keepers = responsible(cid, [n.overlay.peer_id for n in nodes], 3)
        user = next(n for n in nodes if n.overlay.peer_id not in keepers)
        creator, p1, liar = (n for n in nodes if n is not user)
        shown = await creator.registry.publish(
            "default", {**LISTING, "name": "wordcount", "royalty_bps": 0}
        )
        await creator.release_build("default", {"name": "wordcount", "version": "1.0.0"}, wasm)
        agent = f"{shown['publisher']}/wordcount"
        for provider in (p1, liar):
            provider.tasks.serve_agents((agent,))
        for node in (p1, liar, user):  # the release reaches everyone's registry
            with trio.fail_after(30):
                for _ in iter(int, 1):  # until it is there
                    found = await node.registry.show(shown["publisher"], "wordcount")
                    if found and found["releases"]:
                        break
                    await trio.sleep(0.05)

        done = await user.tasks.run_task(agent, "^1", b"one two three", p1.overlay.peer_id)
        assert done["output"] == b'{"bytes": 13, "lines": 0, "words": 3, "longest_word": 5}\n'
        assert done["receipt"].outcome == "ok" and done["receipt"].provider == p1.overlay.peer_id
        assert await user.builds.info(done["receipt"].cid) is None  # the user holds no copy

        async def wrong(peer: str, request: TaskRequest) -> TaskResponse:
            answer = await liar.tasks._answer(peer, request)
            return TaskResponse(output=b'{"words": 1000}\n', receipt=answer.receipt)

        liar.overlay.requests.serve(TASK, wrong)
        with pytest.raises(TaskError, match="does not match"):
            await user.tasks.run_task(agent, "*", b"a b", liar.overlay.peer_id)
        # Without a chosen provider, the liar is passed over for an honest one.
        # Both providers' cards reach the user.
        with trio.fail_after(10):
            for _ in iter(int, 1):
                found = {c["provider"] for c in user.tasks.candidates(agent)}
                if found == {p1.overlay.peer_id, liar.overlay.peer_id}:
                    break
                await trio.sleep(0.05)
        # Without a chosen provider, the liar (tried first here) is passed over.
        ranked = sorted(
            user.tasks.candidates(agent), key=lambda c: c["provider"] != liar.overlay.peer_id
        )
        monkeypatch.setattr(user.tasks, "candidates", lambda _agent: ranked)
        again = await user.tasks.run_task(agent, "*", b"a b", None)
        assert again["provider"] == p1.overlay.peer_id
        monkeypatch.undo()
        # A provider that stops sending its card drops out of everyone's candidates.
        liar.tasks.serve_agents(())
        with trio.fail_after(10):
            for _ in iter(int, 1):
                found = {c["provider"] for c in user.tasks.candidates(agent)}
                if found == {p1.overlay.peer_id}:
                    break
                await trio.sleep(0.05)
