"""The models' messages and checks on their own: chat bodies, chunks, receipts, cards."""

from __future__ import annotations

import dataclasses
import time

import pytest

from mercato.node.models import BadModelRequest, InferReceipt, cost, loads_strict, parse_chat
from mercato.node.models._openai import checked_chunk, engine_body
from mercato.node.tasks import AgentCard, BadReceipt, CardBook, ModelOffer
from mercato.node.tasks._cards import card_verdict
from mercato.p2p import Keypair, Verdict, canonical_cbor

HELLO = [{"role": "user", "content": "hi"}]


def test_cost_is_per_thousand_tokens_rounded_up() -> None:
    assert cost(0, 0, 1000, 1000) == 0
    assert cost(1, 0, 1000, 1000) == 1
    assert cost(1, 1, 1, 1) == 1  # 0.002 lamports is still one
    assert cost(1000, 2000, 100, 300) == 700


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([], ""),
        ({"messages": HELLO}, "model"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"model": "m", "messages": HELLO, "n": 3}, "n"),
        ({"model": "m", "messages": HELLO, "tools": [{"type": "function"}]}, "tools"),
        ({"model": "m", "messages": HELLO, "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "messages": HELLO, "temperature": "hot"}, "temperature"),
        ({"model": "m", "messages": HELLO, "temperature": 1e300}, "temperature"),
        ({"model": "m", "messages": HELLO, "top_logprobs": 100000}, "top_logprobs"),
    ],
)
def test_a_bad_chat_body_names_its_parameter(body: object, param: str) -> None:
    with pytest.raises(BadModelRequest) as refused:
        parse_chat(body)
    assert refused.value.param == param


def test_nan_is_not_json_here() -> None:
    with pytest.raises(ValueError):
        loads_strict(b'{"model": "m", "messages": [], "temperature": NaN}')


def test_the_engine_gets_only_what_was_checked() -> None:
    chat = parse_chat(
        {
            "model": "m",
            "messages": HELLO,
            "max_tokens": 8,
            "n_predict": 100000,
            "ignore_eos": True,
            "temperature": 0.5,
            "seed": 3,
        }
    )
    body = engine_body(chat, 8, "tiny")
    assert set(body) == {
        "model", "messages", "max_tokens", "temperature", "seed", "stream",
        "stream_options", "logprobs", "top_logprobs",
    }  # fmt: skip
    assert body["max_tokens"] == 8 and body["stream"] is True and body["top_logprobs"] == 1


@pytest.mark.parametrize(
    "chunk",
    [b"[1]", b'{"choices": "x"}', b'{"choices": [1]}', b'{"choices": [{"delta": "x"}]}',
     b'{"choices": [{"delta": {"content": 5}}]}', b"[" * 100_000 + b"]" * 100_000],
)  # fmt: skip
def test_a_malformed_chunk_is_refused(chunk: bytes) -> None:
    with pytest.raises(ValueError):
        checked_chunk(chunk)


def test_a_receipt_is_checked_against_its_provider() -> None:
    key, other = Keypair.generate(), Keypair.generate()
    receipt = InferReceipt(
        call=b"c" * 16, model="p/m", provider=key.peer_id, user=other.peer_id,
        request_hash=b"r" * 32, output_hash=b"o" * 32, chunks=3, input_tokens=10,
        output_tokens=5, input_price=100, output_price=200, price=2, outcome="ok",
        wall_ms=5, time=int(time.time()),
    )  # fmt: skip
    assert InferReceipt.verify(receipt.sign(key)) == receipt
    forged = dataclasses.replace(receipt, provider=other.peer_id)
    with pytest.raises(BadReceipt):
        InferReceipt.verify(canonical_cbor({"body": dataclasses.asdict(forged), "sig": b"x" * 64}))
    with pytest.raises(BadReceipt):
        InferReceipt.verify(dataclasses.replace(receipt, outcome="great").sign(key))


def _card(key: Keypair, models: list[dict]) -> AgentCard:
    return AgentCard(provider=key.peer_id, seq=1, expires=time.time() + 60, models=models)


def test_cards_without_models_keep_version_2_and_with_models_are_version_3() -> None:
    key = Keypair.generate()
    offer = ModelOffer(model="p/m", input_price=1, output_price=2, context_length=512)
    plain, serving = _card(key, []), _card(key, [offer.to_wire()])
    assert plain.to_wire()["v"] == 2 and "models" not in plain.to_wire()
    assert serving.to_wire()["v"] == 3
    assert AgentCard.verify(plain.sign(key)) == plain
    assert AgentCard.verify(serving.sign(key)).offers() == [offer]
    book = CardBook()
    assert card_verdict(book, serving.sign(key), "me") is Verdict.ACCEPT
    assert book.model_candidates("p/m")[0]["offer"] == offer


def test_a_card_of_an_unknown_version_is_passed_over_and_a_bad_offer_refused() -> None:
    key = Keypair.generate()
    body = {**_card(key, []).to_wire(), "v": 4}
    newer = canonical_cbor({"card": body, "sig": key.sign("agent-card", body)})
    assert card_verdict(CardBook(), newer, "me") is Verdict.IGNORE
    bad = _card(key, [{"t": "model.offer", "v": 1, "model": "p/m"}])
    assert card_verdict(CardBook(), bad.sign(key), "me") is Verdict.REJECT
