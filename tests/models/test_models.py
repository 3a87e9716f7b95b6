"""Models through the network: a provider serves the tiny model from a real
`llama-server`; a user's node routes OpenAI calls (the official `openai`
client) to it, checks each receipt against the stream, and pays per token
through a channel on a shared ledger. Every bad input is refused with nothing
paid, or paid only for what was delivered."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio
from engine import Engine, running_llama_server, write_tiny_gguf
from solders.pubkey import Pubkey

from mercato.node import Config, DataDir, KeyStore, Node, ServedModel, init_data_dir
from mercato.node.models import InferReceipt, cost
from mercato.node.money import task_amounts
from mercato.settlement import open_embedded_ledger

from ..conftest import budget
from ..node.test_tasks import until

INPUT_PRICE = 1_000  # lamports per 1,000 tokens
OUTPUT_PRICE = 50_000
ROYALTY_BPS = 1000
MODEL = {
    "kind": "model",
    "title": "Tiny chat",
    "summary": "Random weights: nonsense, fast.",
    "royalty_bps": ROYALTY_BPS,
    "model": {
        "family": "llama",
        "parameters": 150_000,
        "quantisation": "F32",
        "context_length": 512,
        "input_price": INPUT_PRICE,
        "output_price": OUTPUT_PRICE,
    },
}
HELLO = [{"role": "user", "content": "Say something."}]


@dataclasses.dataclass
class Net:
    provider: Node
    user: Node
    model: str
    creator: str
    ledger: Any
    others: list[Node] = dataclasses.field(default_factory=list)

    def client(self) -> openai.OpenAI:
        token = self.user.datadir.token_file.read_text().strip()
        return openai.OpenAI(
            base_url=self.user.api_url + "/v1", api_key=token, max_retries=0, timeout=60
        )

    async def call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        """Run a blocking client call in a thread (the nodes run on this trio loop)."""
        return await trio.to_thread.run_sync(lambda: fn(*args, **kw))

    async def post(self, body: Any) -> httpx.Response:
        token = self.user.datadir.token_file.read_text().strip()

        def send() -> httpx.Response:
            return httpx.post(
                self.user.api_url + "/v1/chat/completions",
                content=body if isinstance(body, bytes) else json.dumps(body).encode(),
                headers={"Authorization": f"Bearer {token}"},
                timeout=60,
            )

        return await trio.to_thread.run_sync(send)


def _config(spending: dict[str, Any] | None = None) -> Config:
    return (
        Config()
        .replace("api", port=0)
        .replace("p2p", listen=("/ip4/127.0.0.1/tcp/0",), mdns=False, target_peers=0)
        .replace("serve", heartbeat_s=0.5, card_ttl_s=5.0)
        .replace("spending", **(spending or {}))
    )


@asynccontextmanager
async def model_network(
    root: Path,
    engine: Engine,
    spending: dict[str, Any] | None = None,
    context_length: int = 512,
    second: Engine | None = None,
    **served: Any,
) -> AsyncIterator[Net]:
    """A provider serving the tiny model (published by a third key, the creator) from
    ``engine``, and a user, on one embedded ledger; once the user sees the offer.
    With ``second``, a second provider serves the same model from that engine,
    checking its health only every minute (``Net.others``)."""
    names = ("provider", "user", "second")[: 3 if second else 2]
    dirs = [DataDir(root / name) for name in names]
    for datadir in dirs:
        await trio.to_thread.run_sync(init_data_dir, datadir)
    async with (
        open_embedded_ledger(root / "ledger.db") as ledger,
        trio.open_nursery() as nursery,
    ):
        creator = KeyStore(dirs[0]).create_account("creator").address
        ref = f"{creator}/tiny-chat"
        entry = ServedModel(
            name="tiny", listing=ref, backend=engine.base_url, engine_model=engine.model,
            health_interval_s=0.5, **served,
        )  # fmt: skip
        provider = Node(dirs[0], dataclasses.replace(_config(), models=(entry,)), ledger=ledger)
        await nursery.start(provider.run)
        spec = {**MODEL["model"], "context_length": context_length}
        await provider.registry.publish("creator", {**MODEL, "name": "tiny-chat", "model": spec})
        user = Node(dirs[1], _config(spending), ledger=ledger)
        await nursery.start(user.run)
        nodes, others = [provider, user], []
        if second is not None:
            slow = dataclasses.replace(entry, backend=second.base_url, health_interval_s=60.0)
            other = Node(dirs[2], dataclasses.replace(_config(), models=(slow,)), ledger=ledger)
            await nursery.start(other.run)
            nodes.append(other)
            others.append(other)
        for node in nodes[1:]:
            await node.overlay.host.connect(provider.overlay.host.listen_addrs()[0])
        if others:
            await user.overlay.host.connect(others[0].overlay.host.listen_addrs()[0])

        async def offered() -> bool:
            models = (await user.api.models.models())["data"]
            return any(m["id"] == ref and m["mercato"]["providers"] == len(names) - 1
                       for m in models)  # fmt: skip

        await until(offered, budget(30), "the user to see every provider's offer")
        yield Net(provider, user, ref, creator, ledger, others)
        for node in nodes:
            node.request_stop()


def _receipts(node: Node, rows: list[Any]) -> list[InferReceipt]:
    return [InferReceipt.verify(r.receipt) for r in rows if r.receipt]


async def _calls(node: Node, role: str) -> list[Any]:
    return [r for r in await node.tasks.tasklog.recent(100, role) if r.agent.endswith("/tiny-chat")]


async def _settled(net: Net, calls: int, roles: tuple[str, ...] = ("user", "provider")) -> None:
    """Wait until ``calls`` calls are in the task logs: the answer comes first, then
    the payment and the books (a few milliseconds)."""

    async def logged() -> bool:
        nodes = {"user": net.user, "provider": net.provider}
        counts = [len(await _calls(nodes[r], r)) for r in roles]
        return counts == [calls] * len(roles)

    await until(logged, budget(10), f"{calls} calls in the task logs")


@pytest.mark.slow
async def test_an_openai_client_lists_streams_and_pays_per_token(
    tmp_path: Path, llama_engine: Engine
) -> None:
    day = {"max_per_day": 10**9}  # so a call in flight holds a budget, and must free it
    async with model_network(tmp_path, llama_engine, spending=day) as net:
        with net.client() as api:
            listed = await net.call(api.models.list)
            assert [m.id for m in listed] == [net.model]

            whole = await net.call(
                api.chat.completions.create,
                model=net.model, messages=HELLO, max_tokens=12, seed=1,
            )  # fmt: skip
            assert whole.choices[0].message.content and whole.usage is not None
            assert 1 <= whole.usage.completion_tokens <= 12 and whole.usage.prompt_tokens > 0

            def streamed() -> tuple[list[str], Any, Any]:
                pieces, usage, extra = [], None, None
                for chunk in api.chat.completions.create(
                    model="tiny-chat",  # the name alone, when one served model has it
                    messages=HELLO, max_tokens=12, seed=2, stream=True,
                    stream_options={"include_usage": True},
                ):  # fmt: skip
                    if chunk.choices and chunk.choices[0].delta.content:
                        pieces.append(chunk.choices[0].delta.content)
                    if chunk.usage is not None:
                        usage, extra = chunk.usage, (chunk.model_extra or {}).get("mercato")
                return pieces, usage, extra

            pieces, usage, extra = await trio.to_thread.run_sync(streamed)
        assert pieces and usage is not None and 1 <= usage.completion_tokens <= 12
        want = cost(usage.prompt_tokens, usage.completion_tokens, INPUT_PRICE, OUTPUT_PRICE)
        assert extra == {"provider": net.provider.overlay.peer_id, "lamports": want}

        # Both sides logged both calls with the engine's counts, signed by the provider.
        await _settled(net, 2)
        mine = await _calls(net.user, "user")
        theirs = await _calls(net.provider, "provider")
        assert len(mine) == len(theirs) == 2
        receipts = _receipts(net.user, mine)
        assert {(r.input_tokens, r.output_tokens) for r in receipts} == {
            (whole.usage.prompt_tokens, whole.usage.completion_tokens),
            (usage.prompt_tokens, usage.completion_tokens),
        }
        assert [(r.input_tokens, r.output_tokens) for r in mine] == [
            (r.input_tokens, r.output_tokens) for r in receipts
        ]
        # The money: the user's channel pays exactly the receipts' prices, split between
        # the provider and the creator's royalty as both books say.
        total = sum(r.price for r in receipts)
        assert total == sum(r.price for r in mine) == sum(r.price for r in theirs) > 0
        (paying,) = net.user.settlement.channels()
        (paid,) = net.provider.settlement.channels()
        assert paying["paid"] == total and paid["owed"] == paying["owed"]
        payee = Pubkey.from_string(net.provider.settlement.address)
        split: dict[str, int] = {}
        for r in receipts:
            amounts = task_amounts(
                r.price, ROYALTY_BPS, payee, Pubkey.from_string(net.creator),
                Pubkey.from_string(net.user.settlement.address),
            )  # fmt: skip
            for k, v in amounts.items():
                split[str(k)] = split.get(str(k), 0) + v
        assert paid["owed"] == split and paid["settled"] == split
        spending = await net.user.api.tasks.spending()
        assert spending.spent_today == total and spending.reserved == 0  # none held after


@pytest.mark.slow
async def test_bad_requests_are_refused_in_openai_form_and_cost_nothing(
    tmp_path: Path, llama_engine: Engine
) -> None:
    async with model_network(tmp_path, llama_engine, spending={"max_per_task": 20_000}) as net:
        with net.client() as api:
            with pytest.raises(openai.NotFoundError) as missing:
                await net.call(
                    api.chat.completions.create, model="nobody/serves-this", messages=HELLO
                )
            assert missing.value.code == "model_not_found"
            # Over the context: the output cap, and a prompt the engine finds too long.
            with pytest.raises(openai.BadRequestError) as over:
                await net.call(
                    api.chat.completions.create, model=net.model, messages=HELLO, max_tokens=600
                )
            assert over.value.code == "context_length_exceeded"
            long = [{"role": "user", "content": "word " * 700}]
            with pytest.raises(openai.BadRequestError) as too_long:
                await net.call(
                    api.chat.completions.create, model=net.model, messages=long, max_tokens=8
                )
            assert too_long.value.code == "context_length_exceeded"
            # More than the spending policy lets one call pay (20,000 lamports).
            with pytest.raises(openai.PermissionDeniedError) as dear:
                await net.call(
                    api.chat.completions.create, model=net.model, messages=HELLO, max_tokens=400
                )
            assert dear.value.code == "over_spending_limit"
        for body in (b"{not json", {"model": net.model}, {"model": net.model, "messages": [1]},
                     {"model": net.model, "messages": HELLO, "n": 3}):  # fmt: skip
            answer = await net.post(body)
            assert answer.status_code == 400, answer.text
            assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
        assert not net.user.settlement.channels() or net.user.settlement.channels()[0]["paid"] == 0
        assert net.provider.model_service.served_calls == 0


@pytest.mark.slow
async def test_a_provider_that_over_counts_is_caught_and_not_paid(
    tmp_path: Path, llama_engine: Engine
) -> None:
    async with model_network(tmp_path, llama_engine) as net:
        service = net.provider.model_service
        honest = service._receipt

        def inflated(*args: Any) -> InferReceipt:
            receipt = honest(*args)
            out = receipt.output_tokens + 5
            price = cost(receipt.input_tokens, out, receipt.input_price, receipt.output_price)
            return dataclasses.replace(receipt, output_tokens=out, price=price)

        service._receipt = inflated  # type: ignore[method-assign]
        with net.client() as api, pytest.raises(openai.APIStatusError) as caught:
            await net.call(
                api.chat.completions.create,
                model=net.model, messages=HELLO, max_tokens=10, seed=1,
            )  # fmt: skip
        assert caught.value.status_code == 502
        assert "output tokens" in str(caught.value.message)
        (paying,) = net.user.settlement.channels()
        assert paying["paid"] == 0  # nothing paid for a receipt that does not hold up
        standing = net.user.tasks.runner.reputation.get(net.provider.overlay.peer_id)
        assert standing.bad_receipt == 1
        (row,) = await _calls(net.user, "user")
        assert row.status == "failed" and "output tokens" in row.error


@pytest.mark.slow
async def test_an_engine_that_dies_mid_stream_is_paid_only_for_what_arrived(
    tmp_path: Path, tiny_model: Path, llama_server_binary: Path
) -> None:
    async with (
        # Its own engine (this one dies), with room for a long answer: the kill lands
        # long before the engine could finish (about 8,000 tokens/s here).
        running_llama_server(
            tiny_model, binary=llama_server_binary, parallel=1, context_length=4096
        ) as engine,
        model_network(tmp_path, engine, context_length=4096) as net,
    ):
        (served,) = net.provider.model_service._served.values()
        real = served.engine.stream

        async def dying(body: dict[str, Any]) -> AsyncIterator[bytes]:
            n = 0
            async for data in real(body):
                yield data
                n += 1
                if n == 4:
                    engine.kill()  # the engine's process dies, its connection with it

        served.engine.stream = dying  # type: ignore[method-assign]

        def stream() -> tuple[list[str], str]:
            pieces, error = [], ""
            with net.client() as api:
                try:
                    for chunk in api.chat.completions.create(
                        model=net.model, messages=HELLO, max_tokens=3000, stream=True
                    ):
                        if chunk.choices and chunk.choices[0].delta.content:
                            pieces.append(chunk.choices[0].delta.content)
                except openai.APIError as exc:
                    error = str(exc.message)
            return pieces, error

        pieces, error = await trio.to_thread.run_sync(stream)
        assert pieces and "broke off" in error
        await _settled(net, 1)
        (row,) = await _calls(net.user, "user")
        (receipt,) = _receipts(net.user, [row])
        # Counted: one token a chunk delivered (what the engine listed), no input.
        assert receipt.outcome == "failed" and receipt.input_tokens == 0
        assert 1 <= receipt.output_tokens <= len(pieces) + 1 < 3000
        assert receipt.price == cost(0, receipt.output_tokens, INPUT_PRICE, OUTPUT_PRICE)
        (paying,) = net.user.settlement.channels()
        assert paying["paid"] == receipt.price == row.price


@pytest.mark.slow
async def test_a_provider_whose_engine_is_down_is_passed_over_before_any_token(
    tmp_path: Path, llama_engine: Engine, tiny_model: Path, llama_server_binary: Path
) -> None:
    async with (
        running_llama_server(tiny_model, binary=llama_server_binary) as doomed,
        model_network(tmp_path, llama_engine, second=doomed) as net,
    ):
        (down,) = net.others
        dead = down.overlay.peer_id
        doomed.kill()  # its card still offers the model: its next health check is far off
        # The user trusts the doomed provider more (one good call, as far as it knows),
        # so asks it first.
        net.user.tasks.runner.reputation.record(dead, "ok", 1.0)
        with net.client() as api:
            whole = await net.call(
                api.chat.completions.create, model=net.model, messages=HELLO, max_tokens=8
            )
        assert whole.choices[0].message.content
        assert (whole.model_extra or {})["mercato"]["provider"] == net.provider.overlay.peer_id
        await _settled(net, 1)
        (row,) = await _calls(net.user, "user")
        assert row.status == "ok"
        assert [a["provider"] for a in row.attempts] == [dead]
        assert "engine" in row.attempts[0]["error"]
        # The doomed provider saw its engine fail and withdrew its offer at once.

        async def withdrawn() -> bool:
            models = (await net.user.api.models.models())["data"]
            return [m["mercato"]["providers"] for m in models] == [1]

        await until(withdrawn, budget(30), "the doomed provider to withdraw its offer")


@pytest.mark.slow
async def test_calls_at_once_and_a_caller_that_goes_away_leave_the_books_even(
    tmp_path: Path, llama_engine: Engine
) -> None:
    async with model_network(tmp_path, llama_engine) as net:
        token = net.user.datadir.token_file.read_text().strip()

        def walk_away() -> None:
            body = {"model": net.model, "messages": HELLO, "max_tokens": 400, "stream": True}
            with httpx.stream(
                "POST", net.user.api_url + "/v1/chat/completions", json=body, timeout=60,
                headers={"Authorization": f"Bearer {token}"},
            ) as answer:  # fmt: skip
                assert answer.status_code == 200
                next(answer.iter_lines())  # one chunk, then the client hangs up

        await trio.to_thread.run_sync(walk_away)
        answers: list[Any] = []

        async def one(seed: int) -> None:
            with net.client() as api:
                answers.append(
                    await net.call(
                        api.chat.completions.create,
                        model=net.model,
                        messages=HELLO,
                        max_tokens=16,
                        seed=seed,
                    )
                )

        async with trio.open_nursery() as nursery:  # three at once, on one channel
            for seed in range(3):
                nursery.start_soon(one, seed)
        assert len(answers) == 3 and all(a.choices[0].message.content for a in answers)

        async def even() -> bool:  # every receipt paid, on both sides, and nothing owed
            mine = [r for r in await _calls(net.user, "user") if r.receipt]
            (paying,) = net.user.settlement.channels()
            (paid,) = net.provider.settlement.channels()
            total = sum(r.price for r in mine)
            return (
                len(mine) >= 3
                and paying["paid"] == total
                and sum(paid["settled"].values()) == total
                and not net.provider.model_service._unpaid
            )

        await until(even, budget(10), "the books of both sides to agree")


@pytest.mark.slow
async def test_a_long_answer_is_streamed_whole_and_paid(
    tmp_path: Path, llama_server_binary: Path
) -> None:
    long_model = tmp_path / "long.gguf"
    await trio.to_thread.run_sync(lambda: write_tiny_gguf(long_model, context_length=4096))
    async with (
        running_llama_server(
            long_model, binary=llama_server_binary, parallel=1, context_length=4096
        ) as engine,
        model_network(tmp_path, engine, context_length=4096) as net,
    ):
        with net.client() as api:
            whole = await net.call(
                api.chat.completions.create,
                model=net.model,
                messages=HELLO,
                max_tokens=3000,
                seed=2,
            )
        # Thousands of chunks of about 0.4 kB: within what a call of 3,000 tokens holds.
        assert whole.usage is not None and whole.usage.completion_tokens > 1000
        await _settled(net, 1)
        (row,) = await _calls(net.user, "user")
        assert row.status == "ok" and row.output_tokens == whole.usage.completion_tokens
        assert row.price == cost(
            whole.usage.prompt_tokens, whole.usage.completion_tokens, INPUT_PRICE, OUTPUT_PRICE
        )
