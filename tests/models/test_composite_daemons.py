"""A composite agent on real daemons and a localnet: the digest example calls the
wordcount agent and a model served from a real `llama-server`, both through the
node that runs it; the user pays the digest's price plus exactly what the two
calls cost, and every lamport lands where the receipts say when the channels
close."""

from __future__ import annotations

import base64
import json
import textwrap
from pathlib import Path

import openai
import pytest
from engine import Engine

from mercato.node import DataDir, KeyStore, init_data_dir
from mercato.node.models import InferReceipt
from mercato.node.tasks import Receipt

from ..conftest import api_info, run_cli, wait_for

EXAMPLES = Path(__file__).parents[2] / "runtime" / "examples"
PRICE = 2_000_000  # the digest's own price
WORDS_PRICE = 3_000_000  # wordcount's, with a 10 % royalty to its creator
INPUT_PRICE, OUTPUT_PRICE = 2_000, 40_000  # the model's, per 1,000 tokens
FEE = 5000
TEXT = "Composite agents call other agents and models, within a budget."


def cli(datadir: DataDir, *args: str, stdin: str | None = None):
    return run_cli(*args, "--data-dir", str(datadir.root), input_text=stdin, timeout=120)


def json_of(datadir: DataDir, *args: str, stdin: str | None = None):
    done = cli(datadir, *args, "--json", stdin=stdin)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def address_of(datadir: DataDir) -> str:
    init_data_dir(datadir)
    return KeyStore(datadir).info("default").address


def manifest(path: Path, text: str) -> str:
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.mark.slow
def test_a_composite_agent_on_daemons_pays_its_calls_to_the_lamport(
    tmp_path: Path, start_daemon, start_localnet, llama_engine: Engine
) -> None:
    localnet = start_localnet()
    env = {
        "MERCATO_SETTLEMENT_LEDGER": "localnet",
        "MERCATO_SETTLEMENT_RPC_URL": localnet.url,
        "MERCATO_BUILDS_MIN_COPIES": "0",  # releases need no other holder here
    }
    callee, runner, user = (DataDir(tmp_path / n) for n in ("callee", "runner", "user"))
    theirs, mine = address_of(callee), address_of(runner)
    wordcount, model, digest = f"{theirs}/wordcount", f"{theirs}/summarizer", f"{mine}/digest"

    # The callee publishes wordcount and the model, and serves both.
    with callee.config_file.open("a") as config:
        config.write(
            textwrap.dedent(
                f"""
                [models.summarizer]
                listing = "{model}"
                backend = "{llama_engine.base_url}"
                engine_model = "{llama_engine.model}"
                health_interval_s = 0.5
                """
            )
        )
    start_daemon(callee, "--serve", wordcount, env=env)
    there = json_of(callee, "node", "status")["p2p"]["listen_addrs"][0]
    listing = manifest(tmp_path / "wordcount.toml", f"""
        name = "wordcount"
        kind = "agent"
        title = "Word count"
        summary = "Counts words."
        price = {WORDS_PRICE}
        royalty_bps = 1000
        """)  # fmt: skip
    assert cli(callee, "publish", listing).returncode == 0
    wasm = str(EXAMPLES / "wordcount" / "wordcount.wasm")
    released = cli(callee, "release", "wordcount", "1.0.0", "--build", wasm)
    assert released.returncode == 0, released.stderr
    listing = manifest(tmp_path / "model.toml", f"""
        name = "summarizer"
        kind = "model"
        title = "Summarizer"
        summary = "A tiny model with random weights."
        royalty_bps = 1000
        [model]
        family = "llama"
        parameters = 150000
        quantisation = "F32"
        context_length = 512
        input_price = {INPUT_PRICE}
        output_price = {OUTPUT_PRICE}
        """)  # fmt: skip
    assert cli(callee, "publish", listing).returncode == 0

    # The runner publishes the digest, declaring both, and serves it.
    start_daemon(runner, "--bootstrap", there, "--serve", digest, env=env)
    listing = manifest(tmp_path / "digest.toml", f"""
        name = "digest"
        kind = "agent"
        title = "Digest"
        summary = "Counts words and summarises, with others' help."
        price = {PRICE}
        royalty_bps = 0
        [limits]
        timeout_s = 60
        max_subcalls = 2
        """)  # fmt: skip
    assert cli(runner, "publish", listing).returncode == 0
    wasm = str(EXAMPLES / "digest" / "digest.wasm")
    released = cli(runner, "release", "digest", "1.0.0", "--build", wasm,
                   "--depends", f"{wordcount}=^1", "--depends", f"{model}=*")  # fmt: skip
    assert released.returncode == 0, released.stderr
    start_daemon(user, "--bootstrap", there, env=env)

    token = runner.token_file.read_text().strip()
    url = api_info(runner)["url"] + "/v1"
    with openai.OpenAI(base_url=url, api_key=token, max_retries=0, timeout=30) as client:

        def offered() -> bool:
            sees_digest = json_of(user, "providers", digest)["providers"]
            sees_words = json_of(runner, "providers", wordcount)["providers"]
            models = [m.id for m in client.models.list()]
            return bool(sees_digest and sees_words and models == [model])

        wait_for(offered, 60, "the digest, wordcount and the model on offer")

    # Without a budget the calls may cost nothing: both fail inside the agent,
    # unsent, and the user pays the price alone.
    alone = json_of(user, "run", digest, "--input", "-", stdin=TEXT)
    assert json.loads(alone["output"])["wordcount"] is None
    assert alone["cost"] == PRICE
    assert [c["status_name"] for c in alone["subcalls"]] == ["over_budget", "over_budget"]

    # With a budget: both calls made and paid, and the user pays exactly them.
    # (A budget is room the channel must have: a modest one fits the first channel.)
    budget = PRICE + WORDS_PRICE + 1_000_000
    done = json_of(user, "run", digest, "--budget", str(budget), "--input", "-", stdin=TEXT)
    out = json.loads(done["output"])
    assert out["wordcount"]["words"] == len(TEXT.split())
    assert isinstance(out["summary"], str) and out["errors"] == []
    calls = {c["op"]: c for c in done["subcalls"]}
    assert [c["status_name"] for c in done["subcalls"]] == ["ok", "ok"]
    words = Receipt.verify(bytes_of(calls["call"]["receipt_signed"]))
    infer = InferReceipt.verify(bytes_of(calls["infer"]["receipt_signed"]))
    assert words.price == WORDS_PRICE and infer.price > 0
    assert calls["infer"]["cost"] == infer.price and calls["call"]["cost"] == WORDS_PRICE
    spent = WORDS_PRICE + infer.price
    assert done["cost"] == PRICE + spent
    # In text: the agent's output on stdout, what it cost and each call on stderr.
    shown = cli(user, "run", digest, "--budget", str(budget), "--input", "-", stdin=TEXT)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["wordcount"]["words"] == len(TEXT.split())
    cost, *lines = shown.stderr.splitlines()
    assert cost.startswith("cost ") and f"price {PRICE}, sub-calls " in cost
    assert [line.split()[:3] for line in lines] == [
        ["call", wordcount, "ok"], ["infer", model, "ok"],
    ]  # fmt: skip
    # `tasks show` lists the sub-calls with the receipt; the task log, what each
    # run cost (the model's answers differ in length, so their prices do too).
    runs = [t for t in json_of(user, "tasks", "ls")["tasks"] if t["agent"] == digest]
    (side,) = json.loads(cli(user, "tasks", "show", runs[0]["id"], "--json").stdout)["sides"]
    assert [c["status_name"] for c in side["subcalls"]] == ["ok", "ok"]
    prices = sorted(t["price"] for t in runs)
    assert len(runs) == 3 and prices[0] == PRICE and PRICE + spent in prices
    assert prices[2] > PRICE + WORDS_PRICE  # the text run paid both calls too
    paid = sum(t["price"] for t in runs)  # the user's three runs
    fronted_total = paid - 3 * PRICE  # what the runner paid the callee for them

    # The books: the user paid the runner both runs; the runner paid the callee
    # the wordcount run and the model call, on one channel.
    def booked() -> bool:
        (paying,) = json_of(user, "channel", "ls")["channels"]
        channels = json_of(runner, "channel", "ls")["channels"]
        served = [c for c in channels if c["role"] == "payee"]
        fronted = [c for c in channels if c["role"] == "payer"]
        (taken,) = json_of(callee, "channel", "ls")["channels"]
        return (
            paying["paid"] == paid
            and [sum(c["settled"].values()) for c in served] == [paid]
            and [c["paid"] for c in fronted] == [fronted_total]
            and sum(taken["settled"].values()) == fronted_total
        )

    wait_for(booked, 30, "the books to say what the receipts say")

    # On the ledger, once the payees close: the runner gets what the user paid
    # and the rest of its own deposit; the callee what the runner paid (its
    # own royalties included: it created both).
    before = {d: json_of(d, "wallet")["balance"] for d in (runner, callee)}
    (fronted,) = [c for c in json_of(runner, "channel", "ls")["channels"] if c["role"] == "payer"]
    for payee in (runner, callee):
        for channel in json_of(payee, "channel", "ls")["channels"]:
            if channel["role"] == "payee":
                assert cli(payee, "channel", "close", channel["stake"]).returncode == 0
    after = {d: json_of(d, "wallet")["balance"] for d in (runner, callee)}
    returned = fronted["deposit"] - fronted_total
    assert after[runner] - before[runner] == paid - 2 * FEE + returned
    assert after[callee] - before[callee] == fronted_total - 2 * FEE


def bytes_of(value: str) -> bytes:
    return base64.b64decode(value)
