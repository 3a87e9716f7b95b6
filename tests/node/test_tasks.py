"""Tasks: a user runs someone's agent on someone else's node, checks it, and learns."""

import hashlib
import json
import time
from collections import Counter
from pathlib import Path

import pytest
import trio
import wasmtime

from mercato.node import open_node_store
from mercato.node.tasks._choice import Offer, rank
from mercato.node.tasks._messages import (
    TASK,
    BadReceipt,
    Quote,
    Receipt,
    TaskRequest,
    TaskResponse,
    digest,
)
from mercato.node.tasks._reputation import ReputationBook, save
from mercato.p2p import Keypair

from .test_registry_network import running_nodes

EXAMPLES = Path(__file__).parents[2] / "runtime" / "examples"
MODULES = Path(__file__).parent / "modules"
LISTING = {
    "kind": "agent",
    "title": "An agent",
    "summary": "Does a thing.",
    "price": 0,
    "royalty_bps": 0,
}


def a_quote(provider: Keypair, **changes) -> Quote:
    fields = dict(
        quote=b"q" * 16, agent="a/b", version="1.0.0", cid="bld-" + "0" * 64, price=0,
        expected_ms=5, load=0.0, expires=time.time() + 30, provider=provider.peer_id,
        user="someone",
    )  # fmt: skip
    return Quote(**{**fields, **changes})


def test_a_receipt_holds_only_for_its_task_quote_input_and_output() -> None:
    provider = Keypair.generate()
    quote = a_quote(provider)
    receipt = Receipt(
        task=b"t" * 16, agent="a/b", version="1.0.0", cid=quote.cid,
        input_hash=digest(b"in"), output_hash=digest(b"out"), outcome="ok", fuel=1,
        wall_ms=1, price=0, provider=provider.peer_id, user="someone", time=0, quote=quote.quote,
    )  # fmt: skip
    signed = receipt.sign(provider)
    Receipt.verify(signed).check(b"t" * 16, quote, b"in", b"out")
    with pytest.raises(BadReceipt, match="output"):
        Receipt.verify(signed).check(b"t" * 16, quote, b"in", b"other")
    with pytest.raises(BadReceipt, match="another task"):
        Receipt.verify(signed).check(b"x" * 16, quote, b"in", b"out")
    with pytest.raises(BadReceipt, match="another task"):  # a receipt under another quote
        Receipt.verify(signed).check(b"t" * 16, a_quote(provider, quote=b"z" * 16), b"in", b"out")
    with pytest.raises(BadReceipt, match="price"):
        Receipt.verify(signed).check(b"t" * 16, a_quote(provider, price=7), b"in", b"out")
    forged = Receipt(**{**receipt.body(), "provider": Keypair.generate().peer_id}).sign(provider)
    with pytest.raises(BadReceipt, match="not signed"):
        Receipt.verify(forged)
    with pytest.raises(BadReceipt):
        Receipt.verify(b"junk")


def test_a_quote_is_signed_by_its_provider() -> None:
    provider = Keypair.generate()
    quote = a_quote(provider)
    assert Quote.verify(quote.sign(provider)) == quote
    with pytest.raises(BadReceipt, match="not signed"):
        Quote.verify(a_quote(Keypair.generate()).sign(provider))
    with pytest.raises(BadReceipt, match="price"):
        Quote.verify(a_quote(provider, price=-1).sign(provider))


def test_the_choice_weighs_price_reputation_latency_and_load() -> None:
    def best(*offers: Offer) -> str:
        return rank(list(offers))[0][1].provider

    base = dict(price=100, reputation=0.5, latency_ms=20.0, load=0.0)
    assert best(Offer("a", **base), Offer("b", **{**base, "price": 50})) == "b"
    assert best(Offer("a", **base), Offer("b", **{**base, "reputation": 0.9})) == "b"
    assert best(Offer("a", **base), Offer("b", **{**base, "latency_ms": 5.0})) == "b"
    assert best(Offer("a", **base), Offer("b", **{**base, "load": 3.0})) == "a"
    # A provider caught cheating is not worth a discount of a few percent.
    cheat = Offer("a", **{**base, "price": 95, "reputation": 0.08})
    assert best(cheat, Offer("b", **{**base, "reputation": 0.6})) == "b"
    # All else equal the lower peer id wins, so choices are reproducible.
    assert best(Offer("b", **base), Offer("a", **base)) == "a"


async def test_reputation_falls_on_wrong_results_decays_and_is_kept(tmp_path: Path) -> None:
    book = ReputationBook(half_life_s=3600)
    for _ in range(3):
        book.record("honest", "ok", latency_ms=10.0)
    book.record("cheat", "ok")
    book.record("cheat", "wrong")
    assert book.score("honest") > 0.5 > book.score("cheat")
    assert book.get("stranger").score == 0.5
    later = book.get("cheat", now=time.time() + 3600)  # one half-life on
    assert later.bad == pytest.approx(book.get("cheat").bad / 2, rel=0.01)
    assert later.score > book.score("cheat")  # the past fades
    async with open_node_store(tmp_path / "node.db") as store:

        def write() -> None:
            with store.db.transaction() as conn:
                save(conn, [book.get("honest"), book.get("cheat")])

        await store.run(write)
    async with open_node_store(tmp_path / "node.db") as store:
        again = ReputationBook(half_life_s=3600)
        await store.run(again.load, store.db)
    assert again.get("cheat").wrong == 1 and again.get("honest").ok == 3
    assert again.get("honest").latency_ms == pytest.approx(10.0)
    assert again.score("cheat") == pytest.approx(book.score("cheat"), abs=0.01)


def wordcount(text: bytes) -> dict:
    words = text.split()
    return {
        "bytes": len(text),
        "lines": text.count(b"\n"),
        "words": len(words),
        "longest_word": max((len(w) for w in words), default=0),
    }


async def until(condition, within: float, what: str) -> None:
    """Wait on a condition with no event to wait on (cards, registries)."""
    with trio.move_on_after(within):
        for _ in iter(int, 1):
            if await condition():
                return
            await trio.sleep(0.05)
    raise AssertionError(f"timed out after {within} s waiting for {what}")


async def _tasks_of(node) -> list[dict]:
    return [{"task": r.id} for r in await node.tasks.tasklog.recent(1000, "user")]


def lie_with_a_valid_signature(liar) -> None:
    """Turn a provider into a cheat: it runs nothing and answers with a wrong
    output under a receipt it signs properly, so only a second opinion can catch it."""

    async def wrong(peer: str, request: TaskRequest) -> TaskResponse:
        answer = await liar.tasks._answer(peer, request)
        if request.op != "run":
            return answer
        output = b'{"words": 1000}\n'
        honest = Receipt.verify(answer.receipt).body()
        receipt = Receipt(**{**honest, "output_hash": digest(output)})
        return TaskResponse(output=output, receipt=receipt.sign(liar.tasks._key))

    liar.overlay.requests.serve(TASK, wrong)


@pytest.mark.slow
async def test_ten_nodes_three_providers_one_cheat_and_one_killed(tmp_path: Path) -> None:
    wc_build = EXAMPLES / "wordcount" / "wordcount.wasm"
    slow_build = tmp_path / "slow_echo.wasm"
    slow_build.write_bytes(wasmtime.wat2wasm((MODULES / "slow_echo.wat").read_text()))
    from mercato.node.builds._service import responsible
    from mercato.node.builds._store import manifest_of

    fast = {"heartbeat_s": 0.5, "card_ttl_s": 5.0}
    checks = {"verify_rate": 0.0, "timeout_s": 30.0}
    async with running_nodes(
        tmp_path, 10, serve=fast, tasks=checks, repair_interval_s=1.0
    ) as nodes:
        for i, a in enumerate(nodes):
            for b in nodes[i + 1 :]:
                await a.overlay.host.connect(b.overlay.host.listen_addrs()[0])
        ids = [n.overlay.peer_id for n in nodes]
        keepers = set(responsible(manifest_of(wc_build).cid, ids, 3))
        keepers |= set(responsible(manifest_of(slow_build).cid, ids, 3))
        # Users hold no copy of the builds; the creator is not a provider.
        others = [n for n in nodes if n.overlay.peer_id not in keepers]
        creator, users = nodes[0], [n for n in others if n is not nodes[0]][:4]
        providers = [n for n in nodes if n is not creator and n not in users][:3]
        assert len(users) == 4 and len(providers) == 3
        liar = providers[2]

        publisher = (await creator.registry.publish("default", {**LISTING, "name": "wc"}))[
            "publisher"
        ]
        slow_limits = {"fuel": 50_000_000_000, "timeout_s": 60}
        await creator.registry.publish(
            "default", {**LISTING, "name": "slow", "limits": slow_limits}
        )
        await creator.api.registry.release("default", {"name": "wc", "version": "1.0.0"}, wc_build)
        await creator.api.registry.release(
            "default", {"name": "slow", "version": "1.0.0"}, slow_build
        )
        wc, slow = f"{publisher}/wc", f"{publisher}/slow"
        for provider in providers[:2]:  # the third joins later, as a cheat
            provider.tasks.serve_agents((wc, slow))

        async def everyone_knows() -> bool:
            for node in nodes:
                for name in ("wc", "slow"):
                    shown = await node.registry.show(publisher, name)
                    if not (shown and shown["releases"]):
                        return False
            return all(len(u.tasks.providers(slow)) == 2 for u in users)

        await until(everyone_knows, 60, "the releases and two cards everywhere")

        # 1. A user with no copy of the build runs it: the right output, a valid
        # receipt, and (a new provider) a second opinion that agrees.
        user = users[0]
        done = await user.tasks.run_task(wc, "^1", b"one two three")
        assert json.loads(done["output"]) == wordcount(b"one two three")
        assert done["receipt"].outcome == "ok"
        assert done["verified"] == "cross-checked", (done["verified"], done["attempts"])
        assert done["provider"] in {p.overlay.peer_id for p in providers}
        assert await user.builds.info(done["receipt"].cid) is None

        # 2. A cheat with valid signatures is caught by a second opinion and the
        # user's own sandbox; the user still gets the right output.
        lie_with_a_valid_signature(liar)
        liar.tasks.serve_agents((wc, slow))

        async def three_cards() -> bool:
            return all(len(u.tasks.providers(wc)) == 3 for u in users)

        await until(three_cards, 10, "the cheat's card")
        caught = await users[1].tasks.run_task(wc, "*", b"a b", liar.overlay.peer_id)
        assert json.loads(caught["output"]) == wordcount(b"a b")
        assert caught["provider"] != liar.overlay.peer_id and caught["verified"] == "local"
        standing = users[1].tasks.runner.reputation.get(liar.overlay.peer_id)
        assert standing.wrong == 1 and standing.score < 0.1
        shown = {p["provider"]: p for p in users[1].tasks.providers(wc)}
        assert shown[liar.overlay.peer_id]["reputation"]["wrong"] == 1
        assert min(shown, key=lambda p: shown[p]["score"]) == liar.overlay.peer_id
        # ... and later runs of that user avoid it: the cheat is not even asked.
        served = liar.tasks.served
        for i in range(10):
            later = await users[1].tasks.run_task(wc, "*", b"x " * i)
            assert later["provider"] != liar.overlay.peer_id
        assert liar.tasks.served == served
        assert users[1].tasks.runner.reputation.get(liar.overlay.peer_id).wrong == 1

        # 3. 200 tasks from 4 users, 8 at a time each: every one right, every
        # receipt valid, whoever ran it (the cheat is caught by each user in turn).
        results: list[tuple[bytes, dict]] = []

        async def user_runs(node, start: int) -> None:
            limiter = trio.Semaphore(8)

            async def one(i: int) -> None:
                async with limiter:
                    text = b" ".join(b"w%d" % j for j in range(i % 17 + 1))
                    results.append((text, await node.tasks.run_task(wc, "*", text)))

            async with trio.open_nursery() as nursery:
                for i in range(start, start + 50):
                    nursery.start_soon(one, i)

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for k, node in enumerate(users):
                    nursery.start_soon(user_runs, node, k * 50)
        assert len(results) == 200
        logs = {r["task"]: node for node in users for r in await _tasks_of(node)}
        for text, result in results:
            assert json.loads(result["output"]) == wordcount(text)
            receipt = result["receipt"]
            assert receipt.outcome == "ok" and receipt.input_hash == hashlib.sha256(text).digest()
            # What the user's node kept is the provider's signed word for this output.
            (kept,) = await logs[result["task"]].tasks.tasklog.get(result["task"])
            stored = Receipt.verify(kept.receipt)
            assert stored.output_hash == digest(result["output"])
            assert (stored.task.hex(), stored.provider) == (result["task"], result["provider"])
        ran_by = Counter(r["provider"] for _, r in results)
        assert liar.overlay.peer_id not in ran_by
        met = [u.tasks.runner.reputation.get(liar.overlay.peer_id) for u in users]
        assert all(m.ok == 0 for m in met)  # the cheat never earned credit anywhere

        # 4. A provider killed in the middle of a task: the task goes elsewhere.
        answer: dict = {}

        async def slow_task() -> None:
            answer.update(await users[2].tasks.run_task(slow, "*", b"still here"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_task)

            async def someone_runs() -> bool:
                return any(p.runtime.busy for p in providers)

            await until(someone_runs, 30, "the slow task to start on a provider")
            killed = next(p for p in providers if p.runtime.busy)
            killed_id = killed.overlay.peer_id
            killed.request_stop()  # its runs are cut off and its connections closed
        assert answer["output"] == b"still here"
        assert answer["provider"] != killed_id
        assert any(a["provider"] == killed_id for a in answer["attempts"])

        # 5. Its card is not renewed: it drops out of every user's candidates.
        async def gone() -> bool:
            return all(
                killed_id not in {p["provider"] for p in u.tasks.providers(wc)} for u in users
            )

        await until(gone, 10, "the stopped provider's card to expire")

        # 6. A live provider that stops serving stops sending its card: it drops out
        # of everyone's candidates while still connected.
        survivor = next(p for p in providers[:2] if p is not killed)
        survivor.tasks.serve_agents(())

        async def quiet() -> bool:
            sid = survivor.overlay.peer_id
            return all(
                sid not in {p["provider"] for p in n.tasks.providers(wc)}
                for n in nodes
                if n is not killed and n is not survivor
            )

        await until(quiet, 10, "the quiet provider's card to expire")
        assert survivor.overlay.peer_id in users[0].overlay.host.connected_peers()


@pytest.mark.slow
async def test_bad_answers_and_bad_requests_are_typed_errors_and_recorded(tmp_path: Path) -> None:
    from mercato.node.tasks._messages import NoProvider, TaskRefused
    from mercato.p2p import RemoteError

    fast = {"heartbeat_s": 0.5, "card_ttl_s": 5.0}
    async with running_nodes(tmp_path, 3, serve=fast, repair_interval_s=1.0) as nodes:
        user, honest, bad = nodes
        for i, a in enumerate(nodes):
            for b in nodes[i + 1 :]:
                await a.overlay.host.connect(b.overlay.host.listen_addrs()[0])
        publisher = (await user.registry.publish("default", {**LISTING, "name": "wc"}))["publisher"]
        small = {**LISTING, "name": "small", "limits": {"max_input_bytes": 16}}
        await user.registry.publish("default", small)
        wasm = EXAMPLES / "wordcount" / "wordcount.wasm"
        for name in ("wc", "small"):
            await user.api.registry.release("default", {"name": name, "version": "1.0.0"}, wasm)
        wc, small_agent = f"{publisher}/wc", f"{publisher}/small"
        for provider in (honest, bad):
            provider.tasks.serve_agents((wc, small_agent))

        async def ready() -> bool:
            known = [await n.registry.show(publisher, "wc") for n in (honest, bad)]
            return all(k and k["releases"] for k in known) and len(user.tasks.providers(wc)) == 2

        await until(ready, 30, "the release and both cards")

        def answer_badly(forge: bool) -> None:
            async def handler(peer: str, request: TaskRequest) -> TaskResponse:
                answer = await bad.tasks._answer(peer, request)
                if request.op != "run":
                    return answer
                if forge:  # a receipt signed by some other key
                    body = Receipt.verify(answer.receipt).body()
                    return TaskResponse(output=answer.output, receipt=Receipt(**body).sign(
                        Keypair.generate()))  # fmt: skip
                return TaskResponse(output=answer.output + b" ", receipt=answer.receipt)

            bad.overlay.requests.serve(TASK, handler)

        bad_id = bad.overlay.peer_id
        for forge, says in ((True, "not signed"), (False, "does not match")):
            answer_badly(forge)
            with pytest.raises(NoProvider, match=says):
                await user.tasks.run_task(wc, "*", b"a b c", bad_id)
            (record,) = [r for r in await user.tasks.tasklog.recent(10) if r.status == "failed"][:1]
            assert record.provider == bad_id and says in record.attempts[0]["error"]
        assert user.tasks.runner.reputation.get(bad_id).bad_receipt == 2
        # Unpinned, the user goes to the honest provider.
        done = await user.tasks.run_task(wc, "*", b"a b c")
        assert done["provider"] == honest.overlay.peer_id
        assert json.loads(done["output"]) == wordcount(b"a b c")

        # Requests the provider refuses, each with its code; it goes on serving.
        hid = honest.overlay.peer_id

        async def ask(**fields) -> TaskResponse:
            request = TaskRequest(**{"op": "quote", "agent": wc, **fields})
            return await user.overlay.requests.request(hid, TASK, request)

        expired = a_quote(honest.tasks._key, agent=wc, expires=time.time() - 1,
                          user=user.overlay.peer_id)  # fmt: skip
        refusals = [
            (
                dict(
                    op="run", version="1.0.0", task=b"t" * 16, quote=expired.sign(honest.tasks._key)
                ),
                "quote_expired",
            ),
            (dict(op="run", task=b"t" * 16, quote=b"junk"), "bad_quote"),
            (dict(agent=small_agent, input_size=17), "input_too_large"),
            (dict(agent=f"{publisher}/other"), "not_served"),
            (dict(op="dance"), "bad_request"),
        ]
        for fields, code in refusals:
            with pytest.raises(RemoteError) as refused:
                await ask(**fields)
            assert refused.value.code == code
        with pytest.raises(TaskRefused, match="over the listing's 16"):
            await user.tasks.run_task(small_agent, "*", b"x" * 17)
        again = await user.tasks.run_task(wc, "*", b"still serving", hid)
        assert json.loads(again["output"])["words"] == 2


def test_a_nonsense_load_or_latency_counts_as_the_worst() -> None:
    base = dict(price=0, reputation=0.5, latency_ms=20.0)
    busy = Offer("b", **base, load=50.0)
    assert rank([Offer("a", **base, load=float("nan")), busy])[0][1].provider == "b"
    slow = Offer("b", price=0, reputation=0.5, latency_ms=900.0, load=0.0)
    assert (
        rank([Offer("a", price=0, reputation=0.5, latency_ms=-5.0, load=0.0), slow])[0][1].provider
        == "b"
    )


async def serve_an_agent(provider, user, price: int = 0) -> str:
    """The provider publishes, releases and serves the wordcount agent at ``price``
    (no royalty); returns it once the user's node knows the release and the card."""
    listing = {**LISTING, "name": "wc", "price": price, "royalty_bps": 0}
    publisher = (await provider.registry.publish("default", listing))["publisher"]
    wasm = EXAMPLES / "wordcount" / "wordcount.wasm"
    cid = (await provider.builds.add_file(wasm)).cid
    release = {"name": "wc", "version": "1.0.0", "cid": cid, "size": wasm.stat().st_size}
    await provider.registry.release("default", release)
    agent = f"{publisher}/wc"
    provider.tasks.serve_agents((agent,))

    async def ready() -> bool:
        shown = await user.registry.show(publisher, "wc")
        return bool(shown and shown["releases"] and user.tasks.providers(agent))

    await until(ready, 30, "the release and the card")
    return agent
